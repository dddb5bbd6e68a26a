"""Kernel scheduling of a FULLNAT rr service end to end, through `lvsd --datapath bpf --fullnat-toa 0`, then
with TOA on (lvsd's default: the program inserts it, each real server sees one per connection).

Two local addresses, three nginx without a route to the client: the tc program schedules each SYN,
takes a local address and a port of its part of the range and makes both entries; the engine adopts
the connections. 30 curls are answered in rotation, `lvsadm --datapath` counts them as created in the
kernel and adopted, `lvsadm -L -c -n` lists them, `lvsadm -G` counts them on their local addresses, and
the real servers saw only the local addresses, the SYNs coming from the kernel's ports.
"""

from __future__ import annotations

import ipaddress
import re

import pytest
from scapy.layers.inet import IP, TCP

from pylvs.lab.netns import Capture, wait_for
from pylvs.lab.topology import CLIENT, VIP, NatLab
from tests.integration.test_ksched import status
from tests.integration.test_ksched_rr import all_in_kernel, in_rotation, kernel_sched_grown

LIPS = ["192.0.2.200", "192.0.2.201"]
URL = f"http://{VIP}/"


@pytest.fixture(scope="module")
def lab():
    lab = NatLab(n_rs=3)
    try:
        lab.up(udp=False)
        for name in lab.rs_names:
            lab.net.ip(name, "route", "del", "default")  # no way back to the client but the LIPs
        lab.start_lvsd("--datapath", "bpf", "--fullnat-toa", "0")
        yield lab
    finally:
        lab.down()
        assert lab.net.leftovers() == []


def laddr_conns(lab) -> dict[str, int]:
    """CONNS per local address from `lvsadm -G`."""
    out = {}
    for line in lab.lvsadm("-G").stdout.splitlines():
        m = re.match(r"\s+(\d+\.\d+\.\d+\.\d+)\s+(\d+)\s+(\d+)", line)
        if m:
            out[m.group(1)] = int(m.group(3))
    return out


def scheduled(lab) -> int:
    """The service's Conns from `lvsadm -L -n --stats`."""
    m = re.search(rf"TCP +{re.escape(VIP)}:80 +(\d+)", lab.lvsadm("-L", "-n", "--stats").stdout)
    assert m is not None
    return int(m.group(1))


def fullnat_service_in_kernel(lab) -> None:
    """The rr FULLNAT service over every real server with both local addresses, scheduled in the kernel."""
    lab.lvsadm("-A", "-t", f"{VIP}:80", "-s", "rr")
    for lip in LIPS:
        lab.lvsadm("-P", "-t", f"{VIP}:80", "-z", lip)
    for addr in lab.rips:
        lab.lvsadm("-a", "-t", f"{VIP}:80", "-r", f"{addr}:{lab.rport}", "--fullnat", "-w", "1")
    # The first connections go through the engine (each real server's next hop is learnt with its first).
    for _ in range(3):
        assert lab.curl(URL).returncode == 0
    wait_for(lambda: all_in_kernel(lab), timeout=6, what="kernel scheduling of the FULLNAT service on")


def test_fullnat_rr_syns_are_scheduled_in_the_kernel_and_adopted(lab):
    fullnat_service_in_kernel(lab)
    before, logged0, held0 = status(lab), {n: len(lab.access_log(n)) for n in lab.rs_names}, laddr_conns(lab)
    conns0 = scheduled(lab)
    with Capture(lab.net, "lan", "br0", f"tcp dst port {lab.rport} and tcp[tcpflags] & tcp-syn != 0") as cap:
        answers = []
        for _ in range(30):
            r = lab.curl(URL)
            assert r.returncode == 0, (r.stderr, lab.lvsd_log()[-1000:])
            answers.append(r.stdout.strip())
    assert in_rotation(answers, 3) and sorted(answers) == sorted(lab.rs_names * 10), (answers, status(lab))
    wait_for(lambda: kernel_sched_grown(lab, before)["adopted"] >= kernel_sched_grown(lab, before)["created"],
             timeout=5, what="every connection adopted")
    ks = kernel_sched_grown(lab, before)
    # A SYN arriving while lvsd republishes at a tick (generation 0) is the engine's, by design.
    assert ks["created"] + ks["punt_off"] == 30 and ks["punt_off"] <= 1, ks
    assert ks["adopted"] == ks["created"] and ks["refused"] == 0 and ks["rerouted"] == 0, ks
    assert ks["punt_lport"] == 0 and ks["punt_service"] == 0 and ks["punt_dest"] == 0, ks
    # The real servers saw the local addresses only.
    seen = [a for n in lab.rs_names for a in lab.access_log(n)[logged0[n]:]]
    assert len(seen) == 30 and set(seen) == set(LIPS), seen
    syns = [(p[IP].src, p[TCP].sport) for p in cap.packets() if TCP in p and p[TCP].flags == "S"]
    assert len(syns) == 30 and {s for s, _ in syns} == set(LIPS), syns
    # The engine holds them as its own FULLNAT connections: listed, counted on their local addresses.
    listed = [line for line in lab.lvsadm("-L", "-c", "-n").stdout.splitlines()
              if re.search(rf"{re.escape(VIP)}:80 +\d+\.\d+\.\d+\.\d+:{lab.rport}\b", line)]
    assert len(listed) >= 30, listed  # (TIME_WAIT keeps them in the table)
    held = laddr_conns(lab)
    assert sum(held.values()) - sum(held0.values()) == 30, (held, held0)
    assert all(held[lip] > held0.get(lip, 0) for lip in LIPS), (held, held0)
    assert scheduled(lab) == conns0 + 30


def toa_of(pkt) -> bytes | None:
    """The value of the packet's TOA option (kind 254), or None; raw bytes, so that an option after the
    end-of-list would be seen too."""
    opts = bytes(pkt[TCP])[20:pkt[TCP].dataofs * 4]
    found, i = [], 0
    while i < len(opts):
        if opts[i] in (0, 1):
            i += 1
            continue
        if i + 1 >= len(opts) or opts[i + 1] < 2:
            break
        if opts[i] == 254:
            found.append(opts[i + 2:i + opts[i + 1]])
        i += opts[i + 1]
    assert len(found) <= 1, found  # never two in one segment
    return found[0] if found else None


def test_with_toa_on_the_kernel_schedules_and_each_server_sees_one_toa_per_connection(lab):
    """lvsd's default (TOA on): SYNs still scheduled in the kernel, the program inserts TOA into each
    client's first ACK; a capture on every real server sees exactly one TOA per connection, carrying the
    client's address and the port its SYN left from (a capture on the client)."""
    lab.stop_lvsd()
    lab.start_lvsd("--datapath", "bpf")  # --fullnat-toa 1: lvsd's default
    fullnat_service_in_kernel(lab)
    before = status(lab)
    n = 12
    caps = [Capture(lab.net, name, "eth0", f"tcp dst port {lab.rport}", name="toa") for name in lab.rs_names]
    client_cap = Capture(lab.net, "client", "eth0", "tcp dst port 80 and tcp[tcpflags] & tcp-syn != 0", name="toa")
    with client_cap, caps[0], caps[1], caps[2]:
        for _ in range(n):
            r = lab.curl(URL)
            assert r.returncode == 0, (r.stderr, lab.lvsd_log()[-1000:])
    wait_for(lambda: kernel_sched_grown(lab, before)["adopted"] >= kernel_sched_grown(lab, before)["created"],
             timeout=5, what="every connection adopted")
    ks = kernel_sched_grown(lab, before)
    assert ks["created"] + ks["punt_off"] == n and ks["punt_off"] <= 1 and ks["refused"] == 0, ks
    client = ipaddress.ip_address(CLIENT).packed
    client_ports = {p[TCP].sport for p in client_cap.packets() if TCP in p and p[TCP].flags == "S"}
    assert len(client_ports) == n, client_ports
    per_conn: dict[tuple[str, str, int], list[bytes]] = {}  # by real server, local address and port
    for name, cap in zip(lab.rs_names, caps, strict=True):
        for p in cap.packets():
            if TCP in p and p[TCP].flags != "S":
                value = toa_of(p)
                conn = per_conn.setdefault((name, p[IP].src, p[TCP].sport), [])
                if value is not None:
                    conn.append(value)
    assert len(per_conn) == n and {src for _, src, _ in per_conn} <= set(LIPS), per_conn.keys()
    assert all(len(v) == 1 for v in per_conn.values()), per_conn  # exactly one TOA per connection
    assert all(v[0][2:] == client for v in per_conn.values()), per_conn
    assert {int.from_bytes(v[0][:2], "big") for v in per_conn.values()} == client_ports
    counters = {k: status(lab)["counters"][k] - before["counters"][k] for k in ("punt_toa", "tcp_event")}
    assert counters["punt_toa"] == 0 and counters["tcp_event"] >= n, counters  # inserted in the kernel
