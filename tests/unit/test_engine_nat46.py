"""NAT46 through FULLNAT: IPv4 clients of an IPv4 service, IPv6 real servers and local address, headers
translated as RFC 7915 says (§4.1, §5.1). Read back with scapy: every field of both headers, every checksum."""

from __future__ import annotations

import pytest
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import IPv6, IPv6ExtHdrFragment
from scapy.layers.l2 import Ether

from pylvs.engine.flow import F_ENGINE_ONLY
from pylvs.engine.hops import Hop
from pylvs.engine.services import Method, RealServer, VirtualService, pack_ip
from pylvs.engine.table import ConfigError
from pylvs.packet import checksum, vnet
from tests.unit.director import (
    CLIENT,
    CLIENT_MAC,
    DIP_MAC,
    VIP,
    VIP_MAC,
    from_client,
    mac,
    make_engine,
    parse,
    tso_frame,
)
from tests.unit.director import checksums_valid as checksums_valid4
from tests.unit.test_engine_ipv6 import checksums_valid, frame, one

RIP6 = "fd00:1::11"
RS6_MAC = "02:00:00:00:02:11"
LIP6 = "fd00:1::100"


def make_nat46(proto: int = 17, vport: int = 53, rport: int = 5353, proxy: str = "", rs_mtu: int = 1500):
    engine = make_engine(proto=proto, vport=vport)
    engine.table.flush()
    svc = engine.table.add_service(VirtualService(proto, pack_ip(VIP), vport, "rr", proxy_protocol=proxy))
    engine.table.add_dest(svc, RealServer(pack_ip(RIP6), rport, method=Method.FULLNAT))
    engine.table.add_laddr(svc, pack_ip("10.1.0.100"))  # IPv4 local addresses are for IPv4 servers
    engine.table.add_laddr(svc, pack_ip(LIP6))
    engine.routes.hops[pack_ip(RIP6)] = Hop(2, mac(RS6_MAC), mac(DIP_MAC), rs_mtu)
    return engine


def from_rs6(l4, hlim: int = 64) -> Ether:
    return Ether(src=RS6_MAC, dst=DIP_MAC) / IPv6(src=RIP6, dst=LIP6, hlim=hlim) / l4


def test_only_fullnat_crosses_families_in_the_table():
    engine = make_nat46()
    svc = next(iter(engine.table))
    with pytest.raises(ConfigError):
        engine.table.add_dest(svc, RealServer(pack_ip("fd00:1::12"), 80, method=Method.MASQ))


def test_udp_request_becomes_ipv6_and_the_reply_ipv4():
    engine = make_nat46()
    sent = from_client(UDP(sport=50000, dport=53) / b"query", ttl=20)
    sent[IP].tos = 0xB8
    ifindex, req = one(engine.process(frame(sent), 1, 0.0))
    assert ifindex == 2 and req.type == 0x86DD and (req.src, req.dst) == (DIP_MAC, RS6_MAC)
    ip6 = req[IPv6]
    assert (ip6.src, ip6.dst, ip6.hlim, ip6.tc, ip6.fl, ip6.nh, ip6.plen) == (LIP6, RIP6, 19, 0xB8, 0, 17, 8 + 5)
    lport = req[UDP].sport
    assert lport >= 5000 and req[UDP].dport == 5353 and bytes(req[UDP].payload) == b"query"
    assert checksums_valid(req)
    reply = from_rs6(UDP(sport=5353, dport=lport) / b"answer", hlim=30)
    reply[IPv6].tc = 0x28
    ifindex, rep = one(engine.process(frame(reply), 2, 0.1))
    assert ifindex == 1 and rep.type == 0x0800 and (rep.src, rep.dst) == (VIP_MAC, CLIENT_MAC)
    ip = rep[IP]
    assert (ip.src, ip.dst, ip.ttl, ip.tos, ip.proto, ip.ihl, int(ip.flags), ip.frag) == (
        VIP, CLIENT, 29, 0x28, 17, 5, 0, 0)
    assert (rep[UDP].sport, rep[UDP].dport, bytes(rep[UDP].payload)) == (53, 50000, b"answer")
    assert checksums_valid4(rep)
    key = pack_ip(RIP6) + pack_ip(LIP6) + (5353).to_bytes(2, "big") + lport.to_bytes(2, "big")
    assert engine.conns.lookup(17, key) is not None  # the reply key is IPv6: the IPv6 path finds replies


def test_long_reply_gets_df_and_ipv4_options_are_dropped():
    engine = make_nat46()
    sent = Ether(src=CLIENT_MAC, dst=VIP_MAC) / IP(src=CLIENT, dst=VIP, options=b"\x01\x01\x01\x00") / UDP(
        sport=50001, dport=53) / b"q"
    _, req = one(engine.process(frame(sent), 1, 0.0))
    assert req[IPv6].plen == 9 and checksums_valid(req)
    _, rep = one(engine.process(frame(from_rs6(UDP(sport=5353, dport=req[UDP].sport) / (b"a" * 1300))), 2, 0.1))
    assert int(rep[IP].flags) == 2 and rep[IP].len == 20 + 8 + 1300 and checksums_valid4(rep)


def test_tcp_with_the_client_address_in_proxy_protocol_v2_tcp4():
    engine = make_nat46(proto=6, vport=80, rport=8080, proxy="v2")
    _, syn = one(engine.process(frame(from_client(TCP(sport=40000, dport=80, flags="S", seq=99))), 1, 0.0))
    assert (syn[IPv6].src, syn[IPv6].dst, syn[TCP].dport, syn[TCP].seq) == (LIP6, RIP6, 8080, 99)
    assert checksums_valid(syn)
    lport = syn[TCP].sport
    sa = TCP(sport=8080, dport=lport, flags="SA", seq=7, ack=100, options=[("MSS", 1440)])
    _, out = one(engine.process(frame(from_rs6(sa)), 2, 0.1))
    header = (b"\r\n\r\n\x00\r\nQUIT\n" + bytes((0x21, 0x11, 0, 12)) + pack_ip(CLIENT) + pack_ip(VIP)
              + (40000).to_bytes(2, "big") + (80).to_bytes(2, "big"))
    assert (out[IP].src, out[TCP].sport, out[TCP].ack) == (VIP, 80, 100)
    assert dict(out[TCP].options)["MSS"] == 1440 - len(header) and checksums_valid4(out)
    _, req = one(engine.process(frame(from_client(TCP(sport=40000, dport=80, flags="PA", seq=100, ack=8)
                                                  / b"GET /")), 1, 0.2))
    assert bytes(req[TCP].payload) == header + b"GET /" and req[IPv6].plen == 20 + len(header) + 5
    assert checksums_valid(req)
    _, ack = one(engine.process(frame(from_rs6(TCP(sport=8080, dport=lport, flags="A", seq=8,
                                                   ack=100 + len(header) + 5))), 2, 0.3))
    assert ack[TCP].ack == 105 and checksums_valid4(ack)


def test_toa_carries_the_ipv4_client_in_eight_bytes():
    engine = make_nat46(proto=6, vport=80, rport=8080)
    _, syn = one(engine.process(frame(from_client(TCP(sport=40001, dport=80, flags="S", seq=1))), 1, 0.0))
    lport = syn[TCP].sport
    one(engine.process(frame(from_rs6(TCP(sport=8080, dport=lport, flags="SA", seq=50, ack=2))), 2, 0.1))
    _, ack = one(engine.process(frame(from_client(TCP(sport=40001, dport=80, flags="A", seq=2, ack=51))), 1, 0.2))
    opts = bytes(ack[TCP])[20:ack[TCP].dataofs * 4]
    assert opts[:8] == bytes((254, 8)) + (40001).to_bytes(2, "big") + pack_ip(CLIENT)
    assert checksums_valid(ack)
    conn, _ = engine.conns.lookup(6, pack_ip(CLIENT) + pack_ip(VIP) + (40001).to_bytes(2, "big")
                                  + (80).to_bytes(2, "big"))
    assert conn.slow is None  # delivered; the recipes stay in the engine (no IPv4 -> IPv6 fast path)
    assert conn.in_flow.flags & F_ENGINE_ONLY and conn.out_flow.flags & F_ENGINE_ONLY


def test_too_long_with_df_is_refused_and_without_is_sent_as_ipv6_fragments():
    engine = make_nat46(rs_mtu=1280)
    big = from_client(UDP(sport=50002, dport=53) / (bytes(range(256)) * 6))  # 1536 bytes of data
    big[IP].flags = "DF"
    out = engine.process(frame(big), 1, 0.0)
    ifindex, err = one(out)
    icmp = bytes(err[IP].payload)
    assert ifindex == 1 and (icmp[0], icmp[1], int.from_bytes(icmp[6:8], "big")) == (3, 4, 1260)
    assert engine.drops["frag_needed"] == 1
    big[IP].flags = 0
    big[IP].id = 0x4242
    frags = [parse(buf) for _, buf in engine.process(frame(big), 1, 0.1)]
    assert len(frags) == 2 and all(len(bytes(f[IPv6])) <= 1280 for f in frags)
    heads = [f[IPv6ExtHdrFragment] for f in frags]
    assert [(h.offset * 8, h.m, h.id, h.nh) for h in heads] == [(0, 1, 0x4242, 17), (1232, 0, 0x4242, 17)]
    data = b"".join(bytes(h.payload) for h in heads)
    whole = IPv6(bytes(frags[0][IPv6])[:40]) / UDP(data)
    whole[IPv6].nh, whole[IPv6].plen = 17, len(data)
    assert (whole[IPv6].src, whole[IPv6].dst) == (LIP6, RIP6)
    udp = UDP(data)
    assert bytes(udp.payload) == bytes(range(256)) * 6 and udp.dport == 5353
    raw = bytearray(data)
    raw[6:8] = b"\0\0"
    pseudo = checksum.ones_sum(pack_ip(LIP6) + pack_ip(RIP6) + len(data).to_bytes(4, "big") + bytes((0, 0, 0, 17)))
    assert udp.chksum == checksum.checksum(raw, pseudo)


def test_partial_checksums_and_offload_offsets_follow_the_header():
    engine = make_nat46(proto=6, vport=80, rport=8080, proxy="v1")
    _, syn = one(engine.process(frame(from_client(TCP(sport=40000, dport=80, flags="S"))), 1, 0.0))
    lport = syn[TCP].sport
    one(engine.process(frame(from_rs6(TCP(sport=8080, dport=lport, flags="SA", seq=0, ack=1))), 2, 0.1))
    pkt = from_client(TCP(sport=40000, dport=80, flags="A", seq=1, ack=1) / (b"d" * 3000))
    pkt[IP].flags = "DF"  # as TCP sends
    ((_, out_buf),) = engine.process(tso_frame(pkt, pack_ip(CLIENT), pack_ip(VIP), vnet.GSO_TCPV4), 1, 0.2)
    assert vnet.unpack(out_buf) == (vnet.F_NEEDS_CSUM, vnet.GSO_TCPV6, 14 + 40 + 20, 1000, 14 + 40, 16)
    out = parse(out_buf)
    assert bytes(out[TCP].payload).startswith(f"PROXY TCP4 {CLIENT} {VIP} 40000 80\r\n".encode())
    expect = checksum.fold(checksum.ones_sum(pack_ip(LIP6) + pack_ip(RIP6)) + 6 + len(out[TCP]))
    assert out[TCP].chksum == expect and (out[IPv6].src, out[IPv6].dst) == (LIP6, RIP6)
