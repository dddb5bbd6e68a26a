"""IP tunneling on the wire, as the kernel's IPVS sends it (issue 18): time exceeded from the VIP,
outer ID 0 with DF, and GUE's source port of an ICMP error hashed from its own flow. Frames are
built with scapy and sent from the client's namespace; the router decrements the TTL on the way in
(the director sees 63) and on the way back; tunnel packets are read at the router's rsnet side."""

from __future__ import annotations

import pytest
from scapy.layers.inet import ICMP, IP, UDP

from pylvs.lab.inject import inject
from pylvs.lab.netns import Capture
from pylvs.lab.topologies_dr_tun import CLIENT, DIP, GUE_PORT, VIP, TunLab
from tests.integration import wire
from tests.integration.labs import flushed, shared_lab

KINDS = ("ipip", "gue", "gre")
RIPS = dict(zip(KINDS, ("198.51.100.11", "198.51.100.12", "198.51.100.13"), strict=True))
VPORTS = dict(zip(KINDS, (53, 54, 55), strict=True))


@pytest.fixture(scope="module")
def tun_lab():
    yield from shared_lab(TunLab(KINDS))


@pytest.fixture
def lab(tun_lab):
    for kind in KINDS:
        tun_lab.lvsadm("-A", "-u", f"{VIP}:{VPORTS[kind]}", "-s", "rr")
        tun_lab.lvsadm("-a", "-u", f"{VIP}:{VPORTS[kind]}", "-r", RIPS[kind], "-i", *TunLab.tun_args(kind))
    yield from flushed(tun_lab)


def datagram(sport: int, dport: int, ip_id: int, ttl: int = 64, df: bool = True) -> bytes:
    return bytes(IP(src=CLIENT, dst=VIP, id=ip_id, ttl=ttl, flags="DF" if df else 0)
                 / UDP(sport=sport, dport=dport) / b"tunnel me")


def tunneled(capture, rip: str) -> list:
    return [p[IP] for p in capture.packets() if IP in p and p[IP].src == DIP and p[IP].dst == rip]


@pytest.mark.parametrize("kind", KINDS)
def test_outer_id_is_zero_with_df_and_ttl_one_gets_time_exceeded_from_the_vip(lab, kind):
    sport = 41000 + VPORTS[kind]
    last = datagram(sport, VPORTS[kind], 3333, ttl=2)  # 1 when it reaches the director
    with Capture(lab.net, "client", "eth0", "icmp", name=f"wire-tun-{kind}") as at_client, \
            Capture(lab.net, "router", "rs0", "ip", name=f"wire-tun-{kind}") as rsnet:
        inject(lab.net, "client", [datagram(sport, VPORTS[kind], 1), datagram(sport, VPORTS[kind], 2), last])
    outer = tunneled(rsnet, RIPS[kind])
    assert [(p.id, p.flags) for p in outer] == [(0, "DF"), (0, "DF")]  # ip_select_ident: DF, no socket
    # (the real servers, with nothing listening, answer the first two with port unreachable)
    icmps = [p for p in at_client.packets() if ICMP in p and p[IP].dst == CLIENT and p[ICMP].type != 3]
    assert len(icmps) == 1, [p.summary() for p in icmps]
    wire.assert_kernel_error(icmps[0], VIP, 63, 11, 0, wire.routed(last, 1))  # as the director saw it


def test_gue_source_port_of_an_icmp_error_is_its_own_flows(lab):
    sport, vport = 42054, VPORTS["gue"]
    about_reply = bytes(IP(src=VIP, dst=CLIENT, ttl=63) / UDP(sport=vport, dport=sport) / b"answer")
    errors = [bytes(IP(src=CLIENT, dst=VIP, id=10 + code) / ICMP(type=3, code=code) / about_reply[:28])
              for code in (3, 1)]
    with Capture(lab.net, "router", "rs0", "udp", name="wire-tun-gue-icmp") as rsnet:
        inject(lab.net, "client", [datagram(sport, vport, 1), *errors])
    outer = tunneled(rsnet, RIPS["gue"])
    assert len(outer) == 3 and all(p[UDP].dport == GUE_PORT for p in outer)
    conn_port, *icmp_ports = (p[UDP].sport for p in outer)
    assert icmp_ports[0] == icmp_ports[1] != conn_port  # one flow: the client's ICMP to the VIP
