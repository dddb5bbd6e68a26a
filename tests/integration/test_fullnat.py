"""FULLNAT end to end: the real servers see a local address and have no route to the client at all."""

from __future__ import annotations

import re

import pytest
from scapy.layers.inet import IP

from pylvs.lab import servers
from pylvs.lab.netns import Capture, wait_for
from pylvs.lab.topology import CLIENT, VIP, NatLab

LIPS = ["192.0.2.200", "192.0.2.201"]


@pytest.fixture(scope="module")
def fnat_lab():
    lab = NatLab(n_rs=2).up(udp=False)
    try:
        for name in lab.rs_names:
            lab.net.ip(name, "route", "del", "default")  # no way back to the client but the LIPs
        lab.start_lvsd()
        lab.lvsadm("-A", "-t", f"{VIP}:80", "-s", "rr")
        for lip in LIPS:
            lab.lvsadm("-P", "-t", f"{VIP}:80", "-z", lip)
        for addr in lab.rips:
            lab.lvsadm("-a", "-t", f"{VIP}:80", "-r", f"{addr}:8080", "--fullnat", "-w", "1")
        yield lab
    finally:
        lab.down()


def test_clients_reach_every_real_server_which_see_only_local_addresses(fnat_lab):
    lab = fnat_lab
    with Capture(lab.net, "client", "eth0", "ip") as cap:
        answers = [lab.curl(f"http://{VIP}/").stdout.strip() for _ in range(4)]
    assert sorted(answers) == ["rs1", "rs1", "rs2", "rs2"]
    seen = lab.access_log("rs1") + lab.access_log("rs2")
    assert len(seen) >= 4 and set(seen) <= set(LIPS) and set(seen) == set(LIPS)  # both LIPs in turn
    for p in cap.packets():
        if IP in p:
            assert {p[IP].src, p[IP].dst} == {CLIENT, VIP}


def test_listing_and_local_address_counters(fnat_lab):
    lab = fnat_lab
    out = lab.lvsadm("-L", "-n").stdout
    assert re.search(r"  -> 192\.0\.2\.11:8080 +FullNat +1 ", out), out
    laddrs = lab.lvsadm("-G").stdout
    for lip in LIPS:
        assert lip in laddrs


def test_wrk_through_fullnat(fnat_lab):
    r = fnat_lab.net.exec("client", "wrk", "-t1", "-c8", "-d2s", "-H", "Connection: close", f"http://{VIP}/",
                          timeout=30)
    assert "Socket errors" not in r.stdout and "Non-2xx" not in r.stdout, r.stdout
    assert int(re.search(r"(\d+) requests in", r.stdout).group(1)) > 100


def test_proxy_protocol_v2_gives_nginx_the_client_address(fnat_lab):
    lab = fnat_lab
    for name, addr in zip(lab.rs_names, lab.rips, strict=True):
        servers.start_nginx(lab.net, name, addr, 8081, f"{name}-pp", proxy_protocol=True)
        wait_for(lambda n=name, a=addr: lab._listening(n, a, 8081), what="nginx with proxy_protocol")
    lab.lvsadm("-A", "-t", f"{VIP}:81", "-s", "rr", "--proxy-protocol", "v2")
    lab.lvsadm("-P", "-t", f"{VIP}:81", "-z", LIPS[0])
    for addr in lab.rips:
        lab.lvsadm("-a", "-t", f"{VIP}:81", "-r", f"{addr}:8081", "--fullnat")
    answers = [lab.curl(f"http://{VIP}:81/").stdout.strip() for _ in range(4)]
    assert sorted(answers) == ["rs1-pp", "rs1-pp", "rs2-pp", "rs2-pp"]
    logged = lab.access_log("rs1-pp") + lab.access_log("rs2-pp")
    assert logged == [CLIENT] * 4  # nginx read the client address from the PROXY v2 header
    # a larger exchange keeps working after the shift of sequence numbers
    r = lab.net.exec("client", "sh", "-c", f"curl -sS --max-time 20 http://{VIP}:81/big | wc -c", timeout=30)
    assert int(r.stdout.strip()) == 64 << 20
    r = lab.net.exec("client", "wrk", "-t1", "-c4", "-d2s", f"http://{VIP}:81/", timeout=30)
    assert "Socket errors" not in r.stdout and "Non-2xx" not in r.stdout, r.stdout
    assert "--proxy-protocol v2" in lab.lvsadm("-S", "-n").stdout
