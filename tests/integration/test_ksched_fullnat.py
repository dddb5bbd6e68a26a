"""Kernel scheduling of a FULLNAT rr service end to end, through `lvsd --datapath bpf --fullnat-toa 0`.

Two local addresses, three nginx without a route to the client: the tc program schedules each SYN,
takes a local address and a port of its part of the range and makes both entries; the engine adopts
the connections. 30 curls are answered in rotation, `lvsadm --datapath` counts them as created in the
kernel and adopted, `lvsadm -L -c -n` lists them, `lvsadm -G` counts them on their local addresses, and
the real servers saw only the local addresses, the SYNs coming from the kernel's ports.
"""

from __future__ import annotations

import re

import pytest
from scapy.layers.inet import IP, TCP

from pylvs.lab.netns import Capture, wait_for
from pylvs.lab.topology import VIP, NatLab
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


def test_fullnat_rr_syns_are_scheduled_in_the_kernel_and_adopted(lab):
    lab.lvsadm("-A", "-t", f"{VIP}:80", "-s", "rr")
    for lip in LIPS:
        lab.lvsadm("-P", "-t", f"{VIP}:80", "-z", lip)
    for addr in lab.rips:
        lab.lvsadm("-a", "-t", f"{VIP}:80", "-r", f"{addr}:{lab.rport}", "--fullnat", "-w", "1")
    # The first connections go through the engine (each real server's next hop is learnt with its first).
    for _ in range(3):
        assert lab.curl(URL).returncode == 0
    wait_for(lambda: all_in_kernel(lab), timeout=6, what="kernel scheduling of the FULLNAT service on")
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
