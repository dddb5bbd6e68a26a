"""IP tunneling end to end: lvsd encapsulates (ipip, GUE, GRE) towards real servers in another network,
which decapsulate with lvs-rs and answer the client straight through the router."""

from __future__ import annotations

import json
import os
import re

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.l2 import GRE, Ether

from pylvs.lab.netns import Capture
from pylvs.lab.topologies_dr_tun import CLIENT, DIP, GUE_PORT, VIP, TunLab
from tests.integration.labs import flushed, http_get_all, shared_lab, wrk_spread

RIP_IPIP, RIP_GUE, RIP_GRE = "198.51.100.11", "198.51.100.12", "198.51.100.13"


@pytest.fixture(scope="module")
def tun_lab():
    yield from shared_lab(TunLab(("ipip", "gue", "gre")))


@pytest.fixture
def lab(tun_lab):
    yield from flushed(tun_lab)


def get(lab, n: int) -> list[str]:
    return http_get_all(lab, n, f"http://{VIP}/")


def inner(p) -> IP | None:
    """The tunneled packet of a captured frame (ipip, GUE or GRE), or None for plain traffic."""
    outer = p[IP]
    if outer.proto == 4:
        return outer.payload
    if outer.proto == 47:
        return p[GRE].payload
    if UDP in p and p[UDP].dport == GUE_PORT:
        raw = bytes(p[UDP].payload)
        assert raw[:4] == b"\x00\x04\x00\x00", raw[:4]  # GUE v0, no options, proto_ctype 4
        return IP(raw[4:])
    return None


def test_curl_reaches_every_real_server_through_its_tunnel(lab):
    lab.service()
    before = {n: len(lab.access_log(n)) for n in lab.rs_names}
    assert get(lab, 6) == ["rs3", "rs2", "rs1"] * 2
    for name in lab.rs_names:
        assert lab.access_log(name)[before[name]:] == [CLIENT, CLIENT]
    listing = lab.lvsadm("-L", "-n").stdout
    assert re.search(r"-> 198\.51\.100\.11:80 +Tunnel +1", listing), listing


def test_outer_headers_dip_to_rip_and_direct_replies_on_the_wire(lab):
    lab.service()
    rs_macs = {lab.mac(n, "eth0") for n in lab.rs_names}
    with Capture(lab.net, "router", "rs0", "ip", name="tun-rsnet") as rsnet, \
            Capture(lab.net, "director", "dip0", "ip", name="tun-director") as director:
        get(lab, 3)
    pkts = [p for p in rsnet.packets() if IP in p]
    tunneled: dict[str, list] = {RIP_IPIP: [], RIP_GUE: [], RIP_GRE: []}
    replies = []
    for p in pkts:
        if p[IP].src == DIP:
            tunneled[p[IP].dst].append(p)
        elif p[IP].src == VIP:
            replies.append(p)
    protos = {rip: {p[IP].proto for p in ps} for rip, ps in tunneled.items()}
    assert protos == {RIP_IPIP: {4}, RIP_GUE: {17}, RIP_GRE: {47}}, protos
    for ps in tunneled.values():
        assert len(ps) >= 4  # SYN, ACK, request, FIN...
        for p in ps:
            i = inner(p)
            assert i is not None and i.src == CLIENT and i.dst == VIP and i[TCP].dport == 80
            assert p[IP].ttl == i.ttl - 1  # the outer header took the inner TTL; the router took one
    gue = tunneled[RIP_GUE]
    assert all(p[UDP].dport == GUE_PORT and p[UDP].chksum == 0 and 32768 <= p[UDP].sport <= 60999 for p in gue)
    assert all(p[GRE].proto == 0x0800 and not p[GRE].chksum_present for p in tunneled[RIP_GRE])
    # Replies: plain TCP from the VIP, sent by the real servers themselves, never encapsulated.
    assert replies and all(p[IP].proto == 6 and p[IP].dst == CLIENT and p[Ether].src in rs_macs for p in replies)
    assert {p[Ether].src for p in replies} == rs_macs
    # No real server complained about the tunnel packets (protocol or port unreachable).
    assert not [p for p in pkts if ICMP in p], [p.summary() for p in pkts if ICMP in p]
    assert not [p for p in director.packets() if IP in p and p[IP].src == VIP]


def test_tunnel_checksums_when_asked(lab):
    lab.service(csum=True)  # --tun-csum for gue and gre; the receivers check them
    with Capture(lab.net, "router", "rs0", "ip", name="tun-csum") as cap:
        assert sorted(get(lab, 3)) == ["rs1", "rs2", "rs3"]
    pkts = [p for p in cap.packets() if IP in p and p[IP].src == DIP]
    gue = [p for p in pkts if p[IP].dst == RIP_GUE]
    gre = [p for p in pkts if p[IP].dst == RIP_GRE]
    assert gue and all(p[UDP].chksum != 0 for p in gue)
    assert gre and all(p[GRE].chksum_present == 1 for p in gre)


def test_wrk_through_three_kinds_of_tunnel(lab):
    lab.service()
    total, counts = wrk_spread(lab, f"http://{VIP}/")
    assert total > 300
    assert sum(counts) >= total and min(counts) >= total // 6, counts


def test_uploads_arrive_whole_in_segments_that_fit_the_tunnel(lab):
    lab.service()
    body = os.path.join(lab.net.tmp, "upload.bin")
    with open(body, "wb") as f:
        f.write(os.urandom(1_000_000))  # under nginx's default client_max_body_size
    with Capture(lab.net, "director", "dip0", "tcp dst port 80", name="up-in") as arriving, \
            Capture(lab.net, "router", "rs0", "ip", name="up-out") as leaving, \
            Capture(lab.net, "client", "eth0", "icmp", name="up-icmp") as icmps:
        for _ in range(3):
            r = lab.curl(f"http://{VIP}/", "--data-binary", f"@{body}", "-o", "/dev/null",
                         "-w", "%{http_code} %{size_upload}", timeout=20)
            assert (r.returncode, r.stdout) == (0, "200 1000000"), (r.stderr, r.stdout)
    # The client's stack hands over GSO super-frames; the Python path cuts them to fit the tunnel,
    # the kernel fast path sends them on whole (checked against the MTU by their segment size).
    assert max(p[IP].len for p in arriving.packets() if IP in p) > 1500
    out = [p for p in leaving.packets() if IP in p and p[IP].src == DIP]
    assert sum(p[IP].len for p in out) > 3 * 1_000_000
    if json.loads(lab.lvsadm("--datapath", "--json").stdout)["datapath"] != "bpf":
        assert len(out) > 3 * 1_000_000 // 1500 and max(p[IP].len for p in out) <= 1500
    # Single full-size segments with DF cannot be cut: the client is told the tunnel's MTU, by the VIP.
    for p in icmps.packets():
        assert p[IP].src == VIP and (p[ICMP].type, p[ICMP].code) == (3, 4)
        assert p[ICMP].nexthopmtu in (1480, 1468, 1476)


def test_lvs_rs_check_down_and_up_again(lab):
    for name in lab.rs_names:
        assert lab.lvs_rs(name, "check").stdout.startswith("ok:")
    lab.lvs_rs("rs1", "down")
    r = lab.lvs_rs("rs1", "check", "--vip", VIP, "--method", "tun", check=False)
    assert r.returncode == 1
    assert "VIP 192.0.2.100 is not on lo" in r.stdout and "nothing decapsulates ipip" in r.stdout, r.stdout
    assert "lvsrs0" not in lab.net.exec("rs1", "ip", "link").stdout  # the TUN device went with the process
    lab.lvs_rs("rs1", "up", "--vip", VIP, "--method", "tun", "--tun-type", "ipip")
    assert lab.lvs_rs("rs1", "check").returncode == 0
    lab.service()
    assert sorted(get(lab, 3)) == ["rs1", "rs2", "rs3"]


def test_lvs_rs_on_a_host_with_loose_rp_filter_everywhere(lab):
    """Debian/systemd hosts often run with rp_filter=2: on lvs-rs's address-less tunnel device even the
    loose check drops every decapsulated packet, so lvs-rs turns `all` to 0 and keeps eth0 at 2."""
    lab.lvs_rs("rs1", "down")
    lab.net.exec("rs1", "sysctl", "-qw", "net.ipv4.conf.all.rp_filter=2")
    try:
        lab.lvs_rs("rs1", "up", "--vip", VIP, "--method", "tun", "--tun-type", "ipip")
        rp = {i: lab.net.exec("rs1", "cat", f"/proc/sys/net/ipv4/conf/{i}/rp_filter").stdout.strip()
              for i in ("all", "eth0", "lvsrs0")}
        assert rp == {"all": "0", "eth0": "2", "lvsrs0": "0"}, rp
        assert lab.lvs_rs("rs1", "check").returncode == 0
        lab.service()
        assert sorted(get(lab, 3)) == ["rs1", "rs2", "rs3"]
    finally:
        lab.lvs_rs("rs1", "down")
        lab.lvs_rs("rs1", "up", "--vip", VIP, "--method", "tun", "--tun-type", "ipip")
    assert lab.net.exec("rs1", "cat", "/proc/sys/net/ipv4/conf/all/rp_filter").stdout.strip() == "0"
