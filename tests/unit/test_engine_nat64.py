"""NAT64 through FULLNAT: IPv6 clients, IPv4 real servers and local address, headers translated as RFC 7915
says. Read back with scapy: every field of both headers and every checksum."""

from __future__ import annotations

from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import IPv6, IPv6ExtHdrDestOpt
from scapy.layers.l2 import Ether

from pylvs.engine.hops import Hop
from pylvs.engine.services import Method, RealServer, VirtualService, pack_ip
from pylvs.packet import checksum, vnet
from tests.unit.director import DIP_MAC, mac, parse, tso_frame
from tests.unit.director import checksums_valid as checksums_valid4
from tests.unit.test_engine_ipv6 import (
    CLIENT6,
    VIP6,
    checksums_valid,
    frame,
    from_client,
    make_engine6,
    one,
)

RIP4 = "10.1.0.11"
RS4_MAC = "02:00:00:00:02:0b"
LIP4 = "10.1.0.100"


def make_nat64(proto: int = 17, vport: int = 53, rport: int = 5353, proxy: str = ""):
    engine = make_engine6(proto=proto, vport=80 if proto == 6 else vport)
    engine.table.flush()
    svc = engine.table.add_service(VirtualService(proto, pack_ip(VIP6), vport, "rr", proxy_protocol=proxy))
    engine.table.add_dest(svc, RealServer(pack_ip(RIP4), rport, method=Method.FULLNAT))
    engine.table.add_laddr(svc, pack_ip(LIP4))
    engine.table.add_laddr(svc, pack_ip("fd00:1::100"))  # IPv6 local addresses are for IPv6 servers
    engine.routes.hops[pack_ip(RIP4)] = Hop(2, mac(RS4_MAC), mac(DIP_MAC))
    return engine


def from_rs4(l4) -> Ether:
    return Ether(src=RS4_MAC, dst=DIP_MAC) / IP(src=RIP4, dst=LIP4, ttl=64) / l4


def test_udp_request_becomes_ipv4_and_the_reply_ipv6():
    engine = make_nat64()
    sent = from_client(UDP(sport=50000, dport=53) / b"query", ext=IPv6ExtHdrDestOpt())
    sent[IPv6].tc = 0xB8
    ifindex, req = one(engine.process(frame(sent), 1, 0.0))
    assert ifindex == 2 and req.type == 0x0800 and req.dst == RS4_MAC
    ip = req[IP]
    # DF only above 1260 bytes (RFC 7915 §5.1): an IPv4 router may fragment a short one
    assert (ip.src, ip.dst, ip.ttl, ip.tos, ip.proto, int(ip.flags), ip.frag) == (LIP4, RIP4, 63, 0xB8, 17, 0, 0)
    assert ip.len == 20 + 8 + 5 and bytes(req[UDP].payload) == b"query"  # the extension header is gone
    lport = req[UDP].sport
    assert req[UDP].dport == 5353 and checksums_valid4(req)
    ifindex, rep = one(engine.process(frame(from_rs4(UDP(sport=5353, dport=lport) / b"answer")), 2, 0.1))
    assert ifindex == 1 and rep.type == 0x86DD
    assert (rep[IPv6].src, rep[IPv6].dst, rep[IPv6].hlim, rep[IPv6].nh) == (VIP6, CLIENT6, 63, 17)
    assert (rep[UDP].sport, rep[UDP].dport, bytes(rep[UDP].payload)) == (53, 50000, b"answer")
    assert checksums_valid(rep)
    assert engine.conns.lookup(17, pack_ip(RIP4) + pack_ip(LIP4) + (5353).to_bytes(2, "big")
                               + lport.to_bytes(2, "big")) is not None  # the reply key is IPv4


def test_tcp_with_the_client_address_in_proxy_protocol_v2():
    engine = make_nat64(proto=6, vport=80, rport=8080, proxy="v2")
    _, syn = one(engine.process(frame(from_client(TCP(sport=40000, dport=80, flags="S", seq=99))), 1, 0.0))
    assert (syn[IP].src, syn[IP].dst, syn[TCP].dport) == (LIP4, RIP4, 8080) and checksums_valid4(syn)
    lport = syn[TCP].sport
    _, sa = one(engine.process(frame(from_rs4(TCP(sport=8080, dport=lport, flags="SA", seq=7, ack=100))), 2, 0.1))
    assert (sa[IPv6].src, sa[TCP].sport, sa[TCP].ack) == (VIP6, 80, 100) and checksums_valid(sa)
    data = from_client(TCP(sport=40000, dport=80, flags="PA", seq=100, ack=8) / b"GET /")
    _, out = one(engine.process(frame(data), 1, 0.2))
    header = (b"\r\n\r\n\x00\r\nQUIT\n" + bytes((0x21, 0x21, 0, 36)) + pack_ip(CLIENT6) + pack_ip(VIP6)
              + (40000).to_bytes(2, "big") + (80).to_bytes(2, "big"))
    assert bytes(out[TCP].payload) == header + b"GET /" and out[IP].len == 20 + 20 + len(header) + 5
    assert checksums_valid4(out)
    _, ack = one(engine.process(frame(from_rs4(TCP(sport=8080, dport=lport, flags="A", seq=8,
                                                   ack=100 + len(header) + 5))), 2, 0.3))
    assert ack[TCP].ack == 105 and checksums_valid(ack)


def test_partial_checksums_and_offload_offsets_follow_the_header():
    engine = make_nat64(proto=6, vport=80, rport=8080, proxy="")
    engine.table.flush()
    svc = engine.table.add_service(VirtualService(6, pack_ip(VIP6), 80, "rr", proxy_protocol="v1"))
    engine.table.add_dest(svc, RealServer(pack_ip(RIP4), 8080, method=Method.FULLNAT))
    engine.table.add_laddr(svc, pack_ip(LIP4))
    _, syn = one(engine.process(frame(from_client(TCP(sport=40000, dport=80, flags="S"))), 1, 0.0))
    lport = syn[TCP].sport
    reply = from_rs4(TCP(sport=8080, dport=lport, flags="A", seq=1, ack=1) / (b"d" * 3000))
    ((ifindex, out_buf),) = engine.process(tso_frame(reply, pack_ip(RIP4), pack_ip(LIP4), vnet.GSO_TCPV4), 2, 0.1)
    flags, gso_type, hdr_len, gso_size, csum_start, csum_offset = vnet.unpack(out_buf)
    assert (flags, gso_type, hdr_len, gso_size, csum_start, csum_offset) == (
        vnet.F_NEEDS_CSUM, vnet.GSO_TCPV6, 14 + 40 + 20, 1000, 14 + 40, 16)
    out = parse(out_buf)
    expect = checksum.fold(checksum.ones_sum(pack_ip(VIP6) + pack_ip(CLIENT6)) + 6 + 20 + 3000)
    assert out[TCP].chksum == expect and (out[IPv6].src, out[IPv6].dst, len(out[TCP].payload)) == (VIP6, CLIENT6, 3000)
