"""Direct routing end to end: curl and wrk through a one-armed lvsd to nginx real servers holding the VIP."""

from __future__ import annotations

import re

import pytest
from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether

from pylvs.lab.netns import Capture
from pylvs.lab.topologies_dr_tun import CLIENT, VIP, DrLab
from tests.integration.labs import flushed, http_get_all, shared_lab, wrk_spread


@pytest.fixture(scope="module")
def dr_lab():
    yield from shared_lab(DrLab())


@pytest.fixture
def lab(dr_lab):
    yield from flushed(dr_lab)


def get(lab, n: int) -> list[str]:
    return http_get_all(lab, n, f"http://{VIP}/")


def test_curl_reaches_every_real_server_which_sees_the_client(lab):
    lab.service()
    before = {n: len(lab.access_log(n)) for n in lab.rs_names}
    assert get(lab, 6) == ["rs3", "rs2", "rs1"] * 2  # rr starts at the newest real server
    for name in lab.rs_names:
        assert lab.access_log(name)[before[name]:] == [CLIENT, CLIENT]
    listing = lab.lvsadm("-L", "-n").stdout
    assert re.search(r"-> 192\.0\.2\.11:80 +Route +1", listing), listing


def test_replies_go_from_the_real_servers_to_the_router_not_through_the_director(lab):
    lab.service()
    director_mac = lab.mac("director", "dip0")
    router_mac = lab.mac("router", "lan0")
    rs_macs = {lab.mac(n, "eth0") for n in lab.rs_names}
    # (lvsd sends with PACKET_QDISC_BYPASS, which taps on the director itself do not see: watch
    # its frames arrive at a real server instead.)
    with Capture(lab.net, "router", "lan0", "tcp port 80", name="dr-router") as on_router, \
            Capture(lab.net, "director", "dip0", "tcp port 80", name="dr-director") as on_director, \
            Capture(lab.net, "rs1", "eth0", "tcp port 80", name="dr-rs1") as on_rs1:
        get(lab, 3)
    replies = [p for p in on_router.packets() if IP in p and p[IP].src == VIP]
    assert len(replies) >= 3 * 3  # SYN-ACK, response, FIN at least, per request
    assert all(p[Ether].src in rs_macs and p[IP].dst == CLIENT and p[TCP].sport == 80 for p in replies)
    assert {p[Ether].src for p in replies} == rs_macs  # all three answered, each by itself
    at_rs1 = [p for p in on_rs1.packets() if IP in p]
    requests = [p for p in at_rs1 if p[IP].dst == VIP]
    assert requests and all(p[Ether].src == director_mac and p[IP].src == CLIENT for p in requests)
    answers = [p for p in at_rs1 if p[IP].src == VIP]
    assert answers and all(p[Ether].dst == router_mac for p in answers)
    seen = [p for p in on_director.packets() if IP in p]
    assert any(p[IP].dst == VIP and p[Ether].dst == director_mac for p in seen)
    assert not [p for p in seen if p[IP].src == VIP and director_mac in (p[Ether].src, p[Ether].dst)]
    stats = lab.lvsadm("-L", "-n", "--stats").stdout.splitlines()[3]
    assert stats.split()[4] == "0", stats  # OutPkts: the director never saw a reply


def test_wrk_spreads_over_all_real_servers_without_errors(lab):
    lab.service()
    total, counts = wrk_spread(lab, f"http://{VIP}/")
    assert total > 300
    # 12 connections, 4 per server by rr; under load their request rates differ
    assert sum(counts) >= total and min(counts) >= total // 6, counts


def test_one_service_mixing_dr_and_nat(lab):
    # rs2 by NAT: its replies (from its RIP, routed to the director by its source rule) are rewritten.
    lab.service(methods=["-g", "-m", "-g"])
    with Capture(lab.net, "director", "dip0", "tcp port 80", name="mixed") as cap:
        assert sorted(get(lab, 6)) == ["rs1", "rs1", "rs2", "rs2", "rs3", "rs3"]
    from_rips = {p[IP].src for p in cap.packets() if IP in p and p[IP].dst == CLIENT}
    assert "192.0.2.12" in from_rips and not {"192.0.2.11", "192.0.2.13"} & from_rips
    rows = {line.split()[1]: line.split() for line in lab.lvsadm("-L", "-n", "--stats").stdout.splitlines()
            if line.strip().startswith("->") and ":" in line}
    assert int(rows["192.0.2.12:80"][4]) > 0  # NAT replies counted
    assert rows["192.0.2.11:80"][4] == rows["192.0.2.13:80"][4] == "0"
    r = lab.curl(f"http://{VIP}/", "-o", "/dev/null", "-w", "%{remote_ip}")
    assert r.stdout == VIP


def test_lvs_rs_check_names_what_is_missing(lab):
    assert lab.lvs_rs("rs1", "check").stdout.startswith("ok:")
    lab.net.sysctl("rs1", "net.ipv4.conf.all.arp_ignore", 0)
    lab.net.sysctl("rs1", "net.ipv4.conf.lo.arp_ignore", 0)
    try:
        r = lab.lvs_rs("rs1", "check", check=False)
        assert r.returncode == 1
        assert "arp_ignore on eth0 is 0" in r.stdout, r.stdout
    finally:
        lab.lvs_rs("rs1", "up", "--vip", VIP, "--method", "dr")
    assert lab.lvs_rs("rs1", "check").returncode == 0
