"""FULLNAT through the engine: both addresses and ports translated, both directions (ipvs.md §4.6)."""

from __future__ import annotations

from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import ARP, Ether

from pylvs.engine.services import Method, pack_ip
from pylvs.packet import vnet
from tests.unit.director import (
    CLIENT,
    CLIENT_MAC,
    DIP_MAC,
    RIPS,
    VIP,
    checksums_valid,
    frame,
    from_client,
    from_rs,
    make_engine,
    parse,
    rs_mac,
)
from tests.unit.test_engine_nat import complete_partial, pseudo_sum

LIPS = ["10.1.0.200", "10.1.0.201"]


def fullnat_engine(lips=LIPS, proto=6, vport=80, rport=8080):
    e = make_engine(method=Method.FULLNAT, proto=proto, vport=vport, rport=rport)
    svc = next(iter(e.table))
    for lip in lips:
        e.table.add_laddr(svc, pack_ip(lip))
    return e


def test_request_becomes_lip_lport_to_rip_rport():
    e = fullnat_engine()
    ifindex, buf = e.process(frame(from_client(TCP(sport=40000, dport=80, flags="S", seq=7))), 1, 0)[0]
    pkt = parse(buf)
    assert ifindex == 2 and pkt.src == DIP_MAC and pkt.dst == rs_mac(RIPS[2])
    assert pkt[IP].src == LIPS[0] and pkt[IP].dst == RIPS[2]
    assert 5000 <= pkt[TCP].sport <= 65535 and pkt[TCP].dport == 8080 and pkt[TCP].seq == 7
    assert pkt[IP].ttl == 63 and checksums_valid(pkt)


def test_reply_to_lip_becomes_vip_to_client():
    e = fullnat_engine()
    _, buf = e.process(frame(from_client(TCP(sport=40000, dport=80, flags="S"))), 1, 0)[0]
    lport = parse(buf)[TCP].sport
    reply = from_rs(RIPS[2], TCP(sport=8080, dport=lport, flags="SA"), dst=LIPS[0])
    ifindex, out = e.process(frame(reply), 2, 0.1)[0]
    pkt = parse(out)
    assert ifindex == 1 and pkt.dst == CLIENT_MAC
    assert pkt[IP].src == VIP and pkt[IP].dst == CLIENT
    assert pkt[TCP].sport == 80 and pkt[TCP].dport == 40000
    assert checksums_valid(pkt)


def test_udp_both_directions():
    e = fullnat_engine(proto=17, vport=53, rport=5353)
    _, buf = e.process(frame(from_client(UDP(sport=50000, dport=53) / b"q")), 1, 0)[0]
    req = parse(buf)
    assert req[IP].src == LIPS[0] and req[UDP].dport == 5353 and checksums_valid(req)
    reply = from_rs(RIPS[2], UDP(sport=5353, dport=req[UDP].sport) / b"a", dst=LIPS[0])
    rep = parse(e.process(frame(reply), 2, 0)[0][1])
    assert (rep[IP].src, rep[UDP].sport, rep[IP].dst, rep[UDP].dport) == (VIP, 53, CLIENT, 50000)
    assert checksums_valid(rep)


def test_partial_checksum_follows_both_address_changes():
    e = fullnat_engine()
    pkt = from_client(TCP(sport=40000, dport=80, flags="S") / (b"x" * 50))
    built = pkt.__class__(bytes(pkt))
    built[TCP].chksum = pseudo_sum(CLIENT, VIP, 6, built[IP].len - 20)
    _, out = e.process(frame(built, flags=vnet.F_NEEDS_CSUM, csum_start=34, csum_offset=16), 1, 0)[0]
    res = parse(out)
    assert res[TCP].chksum == pseudo_sum(LIPS[0], RIPS[2], 6, built[IP].len - 20)
    assert checksums_valid(res.__class__(complete_partial(res)))


def test_local_addresses_round_robin_and_ports_never_collide():
    e = fullnat_engine()
    seen = set()
    for i in range(200):
        # the same client port from many clients: every (LIP, lport, RIP, rport) must stay unique
        out = e.process(frame(from_client(TCP(sport=40000, dport=80, flags="S"), src=f"192.0.2.{i % 250 + 1}")),
                        1, 0)
        pkt = parse(out[0][1])
        key = (pkt[IP].src, pkt[TCP].sport, pkt[IP].dst, pkt[TCP].dport)
        assert key not in seen
        seen.add(key)
    assert {k[0] for k in seen} == set(LIPS)
    svc = next(iter(e.table))
    assert sum(la.conns for la in svc.laddrs) == 200
    e.tick(1000)  # all SYN_RECV connections expire: their ports are free again
    assert sum(la.conns for la in svc.laddrs) == 0 and len(e.conns) == 0


def test_without_local_address_nothing_is_forwarded():
    e = fullnat_engine(lips=[])
    assert e.process(frame(from_client(TCP(sport=1, dport=80, flags="S"))), 1, 0) == []
    assert e.drops["no_local_address"] == 1 and len(e.conns) == 0
    d = next(iter(e.table)).dests[0]
    assert (d.activeconns, d.inactconns) == (0, 0)


def test_arp_for_a_local_address_is_answered_on_the_real_server_side():
    e = fullnat_engine()
    req = Ether(src=rs_mac(RIPS[0]), dst="ff:ff:ff:ff:ff:ff") / ARP(op=1, hwsrc=rs_mac(RIPS[0]), psrc=RIPS[0],
                                                                      pdst=LIPS[1])
    out = e.process(frame(req), 2, 0)
    rep = parse(out[0][1])
    assert out[0][0] == 2 and rep[ARP].op == 2 and rep[ARP].psrc == LIPS[1] and rep[ARP].hwsrc == DIP_MAC
