"""lvsadm --doctor on the wire: real servers broken one way at a time, each named for what it is.

Two labs: the DR lab, whose second real server is a TUN one on the director's own segment (so the VIP
can also be probed without the tunnel), and the TUN lab, whose real servers sit behind a router. lvsd
runs all along: the probes must get their answers past its rings and its nftables steering.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from contextlib import contextmanager

import pytest

from pylvs.control.client import Client
from pylvs.lab.topologies_dr_tun import DIP, NAT_TABLE, ROUTER_RSNET, VIP, DrLab, TunLab
from pylvs.rs.host import DEFAULT_DEV
from tests.integration.labs import shared_lab

TUN_MSS = {"ipip": 1500 - 20 - 40, "gue": 1500 - 32 - 40}  # what fits the 1500-byte links in the tunnel


def doctor(lab, *selection: str) -> tuple[int, dict[str, dict[str, tuple[str, str]]]]:
    """Run lvsadm --doctor --json: (exit code, {real server: {check: (status, certainty)}})."""
    r = lab.lvsadm("--doctor", *selection, "--json", check=False)
    assert r.returncode in (0, 1), r.stderr
    found = json.loads(r.stdout)
    return r.returncode, {rs["real_server"]: {c["check"]: (c["status"], c["certainty"]) for c in rs["checks"]}
                          for rs in found["real_servers"]}


def control(lab, op: str):
    """One answer from lvsd's control socket (a file in the lab's directory: no namespace to enter)."""
    client = Client(lab.control)
    try:
        answer = client.request({"op": op})
    finally:
        client.close()
    assert answer["ok"], answer
    return answer["result"]


def clean(checks: dict[str, tuple[str, str]]) -> bool:
    return all(status in ("ok", "n/a") for status, _ in checks.values())


def problems(checks: dict[str, tuple[str, str]]) -> dict[str, str]:
    return {name: certainty for name, (status, certainty) in checks.items() if status == "problem"}


def clamp_mss(lab, role: str, mss: int, *routes: str) -> None:
    """The usual cure for the tunnel's overhead: the real server advertises an MSS that fits."""
    for route in routes:
        lab.net.ip(role, "route", "change", *route.split(), "advmss", str(mss))


@contextmanager
def sysctl(lab, role: str, key: str, value: int, back: int):
    lab.net.sysctl(role, key, value)
    try:
        yield
    finally:
        lab.net.sysctl(role, key, back)


def rewrite_vip_to_rip(lab, role: str, rip: str) -> None:
    """A real server that "works" without the VIP: a stateless rewrite of the VIP to its own address.
    Without conntrack nothing turns the reply back, so it leaves from the RIP."""
    lab.net.ip(role, "addr", "del", f"{VIP}/32", "dev", "lo")
    lab.net.exec(role, "nft", "add", "table", "ip", "doctortest")
    lab.net.exec(role, "nft", "add", "chain", "ip", "doctortest", "pre",
                 "{ type filter hook prerouting priority -300 ; }")
    lab.net.exec(role, "nft", "add", "rule", "ip", "doctortest", "pre", "ip", "daddr", VIP, "notrack",
                 "ip", "daddr", "set", rip)


def undo_rewrite(lab, role: str) -> None:
    lab.net.exec(role, "nft", "delete", "table", "ip", "doctortest", check=False)
    lab.net.ip(role, "addr", "replace", f"{VIP}/32", "dev", "lo")


def half_open(lab) -> list[str]:
    """Connections the probes left half open on the real servers (there must be none)."""
    return [line for name in lab.rs_names
            for line in lab.net.exec(name, "ss", "-Htn", "state", "syn-recv").stdout.splitlines()]


# -- DR (and TUN on the director's segment) ------------------------------------------------------


@pytest.fixture(scope="module")
def dr_lab():
    lab = DrLab(n_rs=2)
    for ok in shared_lab(lab):
        rs1, rs2 = lab.rips
        ok.lvs_rs("rs2", "up", "--vip", VIP, "--method", "tun", "--tun-type", "ipip")
        clamp_mss(ok, "rs2", TUN_MSS["ipip"], f"192.0.2.0/24 dev eth0 proto kernel scope link src {rs2}",
                  "default via 192.0.2.254", f"192.0.2.0/24 dev eth0 table {NAT_TABLE}",
                  f"default via {DIP} dev eth0 table {NAT_TABLE}")  # the lab's routes for packets from the RIP
        ok.lvsadm("-A", "-t", f"{VIP}:80", "-s", "rr")
        ok.lvsadm("-a", "-t", f"{VIP}:80", "-r", f"{rs1}:80", "-g")
        ok.lvsadm("-a", "-t", f"{VIP}:80", "-r", f"{rs2}:80", "-i", "--tun-type", "ipip")
        yield ok


def test_a_healthy_dr_and_tun_setup_gives_a_clean_report_and_leaves_nothing_behind(dr_lab):
    lab = dr_lab
    drops = control(lab, "get-drops")
    code, found = doctor(lab)
    assert code == 0, found
    assert set(found) == set(lab.rips) and all(clean(c) for c in found.values()), found
    assert found[lab.rips[1]]["mtu"] == ("ok", "certain")  # the full-size tunnel packet went through
    assert half_open(lab) == []  # every SYN-ACK was answered with a RST
    # lvsd's rings saw the answers (they come in), but took them for no client's and dropped none
    assert control(lab, "get-drops") == drops
    assert control(lab, "list-conns")["conns"] == []


def test_dr_real_server_answering_arp_for_the_vip(dr_lab):
    lab = dr_lab
    with sysctl(lab, "rs1", "net.ipv4.conf.all.arp_ignore", 0, back=1):
        code, found = doctor(lab, "-t", f"{VIP}:80")
    assert code == 1
    assert problems(found[lab.rips[0]]) == {"arp": "certain"}, found
    assert clean(found[lab.rips[1]]), found


def test_dr_and_tun_real_servers_without_the_vip(dr_lab):
    lab = dr_lab
    for role in lab.rs_names:
        lab.net.ip(role, "addr", "del", f"{VIP}/32", "dev", "lo")
    try:
        code, found = doctor(lab)
    finally:
        for role in lab.rs_names:
            lab.net.ip(role, "addr", "replace", f"{VIP}/32", "dev", "lo")
    assert code == 1
    dr, tun = (found[rip] for rip in lab.rips)
    assert problems(dr) == {"vip": "likely"}, found  # answers at its RIP, silent for the VIP
    assert problems(tun) == {"vip": "likely"}, found  # silent for the VIP with or without the tunnel
    assert tun["decap"] == ("ok", "likely") and tun["rp_filter"][0] == "unknown"  # never guessed


def test_dr_and_tun_real_servers_answering_from_their_rip(dr_lab):
    lab = dr_lab
    for role, rip in zip(lab.rs_names, lab.rips, strict=True):
        rewrite_vip_to_rip(lab, role, rip)
    try:
        code, found = doctor(lab)
    finally:
        for role in lab.rs_names:
            undo_rewrite(lab, role)
    assert code == 1
    for rip in lab.rips:
        assert problems(found[rip]) == {"reply_source": "certain"}, found
    assert found[lab.rips[1]]["decap"] == ("ok", "certain")  # the tunnel itself works
    assert half_open(lab) == []  # the RSTs went to the RIPs, where the connections were


def test_tun_real_server_dropping_decapsulated_packets_by_rp_filter(dr_lab):
    lab = dr_lab
    with sysctl(lab, "rs2", f"net.ipv4.conf.{DEFAULT_DEV}.rp_filter", 1, back=0):
        code, found = doctor(lab)
    assert code == 1
    assert problems(found[lab.rips[1]]) == {"rp_filter": "likely"}, found  # the VIP answers without the tunnel
    assert found[lab.rips[1]]["vip"] == ("ok", "certain")
    assert clean(found[lab.rips[0]]), found


# -- TUN behind a router ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tun_lab():
    lab = TunLab(tun_types=("ipip", "gue"))
    for ok in shared_lab(lab):
        for name, kind in zip(lab.rs_names, lab.tun_types, strict=True):
            clamp_mss(ok, name, TUN_MSS[kind], f"default via {ROUTER_RSNET}")
        ok.service()
        yield ok


def stop_decapsulator(lab, role: str) -> None:
    """What "the tunnel device is gone" is with lvs-rs's userspace decapsulator: it and its device stop."""
    with open(os.path.join(lab.net.tmp, f"{role}-lvs-rs", "decap.pid")) as f:
        pid = f.read().strip()
    lab.net.exec(role, "kill", pid)
    deadline = time.monotonic() + 5
    while os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline:
        time.sleep(0.05)


def test_healthy_tunnels_give_a_clean_report(tun_lab):
    code, found = doctor(tun_lab)
    assert code == 0 and set(found) == set(tun_lab.rips), found
    assert all(clean(c) and c["arp"][0] == "n/a" for c in found.values()), found
    assert half_open(tun_lab) == []


def test_rp_filter_on_the_decapsulation_path(tun_lab):
    lab = tun_lab
    with sysctl(lab, "rs1", f"net.ipv4.conf.{DEFAULT_DEV}.rp_filter", 1, back=0):
        code, found = doctor(lab)
    assert code == 1
    # Behind a router the VIP cannot be probed without the tunnel: rp_filter named, with the doubt said.
    assert problems(found[lab.rips[0]]) == {"rp_filter": "possible"}, found
    assert found[lab.rips[0]]["decap"] == ("ok", "likely")
    assert clean(found[lab.rips[1]]), found


def test_path_mtu_too_small_for_the_tunnel(tun_lab):
    lab = tun_lab
    lab.net.mtu("router", "rs0", 1400)  # a smaller link between the director and the real servers
    try:
        code, found = doctor(lab)
    finally:
        lab.net.mtu("router", "rs0", 1500)
    assert code == 1
    for rip in lab.rips:
        assert problems(found[rip]) == {"mtu": "certain"}, found  # the router said "fragmentation needed"


def test_tunnel_not_decapsulated(tun_lab):
    """The TUN lab's last test: it leaves both decapsulators stopped for the teardown to clean up."""
    lab = tun_lab
    for role in lab.rs_names:
        stop_decapsulator(lab, role)
    code, found = doctor(lab)
    assert code == 1
    for rip in lab.rips:  # ipip: protocol unreachable; GUE: port unreachable
        assert problems(found[rip]) == {"decap": "certain"}, found


def test_the_probe_socket_takes_only_packets_to_the_probing_address():
    """The classic BPF filter of the doctor's IPv4 socket, on loopback in a namespace of its own."""
    name = f"plvsdoc{os.getpid()}"
    script = (
        "import socket\n"
        "from pylvs.doctor.probe import to_addresses\n"
        "from pylvs.rs import capture\n"
        "s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0800))\n"
        "capture.attach_filter(s, to_addresses({socket.inet_aton('127.0.0.2'), socket.inet_aton('127.0.0.3')}))\n"
        "s.bind(('lo', 0x0800)); s.settimeout(0.3)\n"
        "u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
        "for last in (1, 2, 3, 4): u.sendto(b'x', (f'127.0.0.{last}', 9))\n"
        "got = set()\n"
        "try:\n"
        "    while True: got.add(socket.inet_ntoa(s.recv(2000)[30:34]))\n"
        "except TimeoutError: pass\n"
        "print(sorted(got))\n"
    )
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        out = subprocess.run(["ip", "netns", "exec", name, sys.executable, "-c", script], capture_output=True,
                             text=True, timeout=30, check=True).stdout
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)
    assert out.strip() == "['127.0.0.2', '127.0.0.3']"
