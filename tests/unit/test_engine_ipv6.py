"""IPv6 through the sans-I/O engine: NAT66 and DR, extension headers, fragments, neighbour discovery,
ICMPv6 echo and errors. Frames are built and read back with scapy; every checksum is recomputed by
scapy and compared with what the engine wrote."""

from __future__ import annotations

import pytest
from scapy.layers.inet import TCP, UDP
from scapy.layers.inet6 import (
    ICMPv6DestUnreach,
    ICMPv6EchoReply,
    ICMPv6EchoRequest,
    ICMPv6ND_NA,
    ICMPv6ND_NS,
    ICMPv6NDOptDstLLAddr,
    ICMPv6NDOptSrcLLAddr,
    ICMPv6PacketTooBig,
    ICMPv6TimeExceeded,
    IPerror6,
    IPv6,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrFragment,
    IPv6ExtHdrHopByHop,
    IPv6ExtHdrRouting,
    TCPerror,
    in6_chksum,
)
from scapy.layers.l2 import Ether

from pylvs.engine.engine import Engine, Interface
from pylvs.engine.flow import F_ENGINE_ONLY
from pylvs.engine.hops import Hop, StaticRoutes
from pylvs.engine.services import SVC_F_PERSISTENT, Method, RealServer, VirtualService, pack_ip, prefix_mask
from pylvs.packet import checksum, vnet
from tests.unit.director import CLIENT_MAC, DIP_MAC, VIP_MAC, mac, parse

EXT_HEADERS = (IPv6ExtHdrHopByHop, IPv6ExtHdrDestOpt, IPv6ExtHdrRouting, IPv6ExtHdrFragment)

CLIENT6 = "2001:db8:c::100"
VIP6 = "2001:db8:f::1"
DIR_ADDR = "2001:db8:f::fe"  # the director's own address on the client side
DIP6 = "fd00:1::1"
RIPS6 = ["fd00:1::11", "fd00:1::12", "fd00:1::13"]
RS_MAC = {rip: f"02:00:00:00:02:{0x11 + i:02x}" for i, rip in enumerate(RIPS6)}


def make_engine6(method: Method = Method.MASQ, proto: int = 6, vport: int = 80, rport: int = 8080,
                 rs_mtu: int = 1500, **svc_kw) -> Engine:
    hops = {pack_ip(CLIENT6): Hop(1, mac(CLIENT_MAC), mac(VIP_MAC))}
    for rip in RIPS6:
        hops[pack_ip(rip)] = Hop(2, mac(RS_MAC[rip]), mac(DIP_MAC), rs_mtu)
    engine = Engine(StaticRoutes(hops))
    engine.add_interface(Interface(1, "vip0", mac(VIP_MAC), {pack_ip("192.0.2.254")}, addrs6={pack_ip(DIR_ADDR)}))
    engine.add_interface(Interface(2, "dip0", mac(DIP_MAC), {pack_ip("10.1.0.1")}, addrs6={pack_ip(DIP6)}))
    svc = engine.table.add_service(VirtualService(proto, pack_ip(VIP6), vport, "rr", **svc_kw))
    for rip in RIPS6:
        engine.table.add_dest(svc, RealServer(pack_ip(rip), rport, method=method))
    return engine


def frame(pkt, **vnet_fields) -> bytearray:
    return bytearray(vnet.pack(**vnet_fields) + bytes(pkt))


def from_client(l4, src: str = CLIENT6, dst: str = VIP6, hlim: int = 64, ext=None) -> Ether:
    ip = IPv6(src=src, dst=dst, hlim=hlim)
    return Ether(src=CLIENT_MAC, dst=VIP_MAC) / (ip / ext / l4 if ext is not None else ip / l4)


def from_rs(rip: str, l4, dst: str = CLIENT6, hlim: int = 64) -> Ether:
    return Ether(src=RS_MAC[rip], dst=DIP_MAC) / IPv6(src=rip, dst=dst, hlim=hlim) / l4


def checksums_valid(pkt: Ether) -> bool:
    """The upper-layer checksum (TCP, UDP or ICMPv6, after any extension headers) is what scapy's
    in6_chksum computes over the packet with the IPv6 pseudo-header."""
    ip = pkt[IPv6]
    layer = ip.payload
    while isinstance(layer, EXT_HEADERS):
        layer = layer.payload
    raw = bytearray(bytes(layer))
    nh, off = (6, 16) if isinstance(layer, TCP) else (17, 6) if isinstance(layer, UDP) else (58, 2)
    got = int.from_bytes(raw[off:off + 2], "big")
    raw[off:off + 2] = b"\0\0"
    expect = in6_chksum(nh, ip, bytes(raw))
    return got == (expect or 0xFFFF if nh == 17 else expect)


def one(out) -> tuple[int, Ether]:
    assert len(out) == 1, out
    ifindex, buf = out[0]
    return ifindex, parse(buf)


# -- NAT66 ------------------------------------------------------------------------------------------


def test_tcp_request_dnated_and_reply_snated():
    engine = make_engine6()
    ifindex, req = one(engine.process(frame(from_client(TCP(sport=40000, dport=80, flags="S", seq=7))), 1, 0.0))
    rip = RIPS6[2]  # rr starts at the newest real server
    assert ifindex == 2 and (req.src, req.dst) == (DIP_MAC, RS_MAC[rip])
    assert (req[IPv6].src, req[IPv6].dst, req[IPv6].hlim) == (CLIENT6, rip, 63)
    assert (req[TCP].sport, req[TCP].dport, req[TCP].seq, str(req[TCP].flags)) == (40000, 8080, 7, "S")
    assert checksums_valid(req)
    ifindex, rep = one(engine.process(frame(from_rs(rip, TCP(sport=8080, dport=40000, flags="SA"))), 2, 0.1))
    assert ifindex == 1 and (rep.src, rep.dst) == (VIP_MAC, CLIENT_MAC)
    assert (rep[IPv6].src, rep[IPv6].dst, rep[IPv6].hlim) == (VIP6, CLIENT6, 63)
    assert (rep[TCP].sport, rep[TCP].dport) == (80, 40000)
    assert checksums_valid(rep)
    conn = next(c for c in engine.conns.conns())
    assert not conn.in_flow.flags & F_ENGINE_ONLY and not conn.out_flow.flags & F_ENGINE_ONLY  # for the fast path
    assert engine.table.find(6, pack_ip(VIP6), 80).stats.conns == 1


def test_udp_both_directions():
    engine = make_engine6(proto=17, vport=53, rport=5353)
    ifindex, req = one(engine.process(frame(from_client(UDP(sport=50000, dport=53) / b"query")), 1, 0.0))
    assert ifindex == 2 and req[IPv6].dst == RIPS6[2] and req[UDP].dport == 5353 and bytes(req[UDP].payload) == b"query"
    assert checksums_valid(req)
    ifindex, rep = one(engine.process(frame(from_rs(RIPS6[2], UDP(sport=5353, dport=50000) / b"answer")), 2, 0.1))
    assert ifindex == 1 and (rep[IPv6].src, rep[UDP].sport, rep[IPv6].dst) == (VIP6, 53, CLIENT6)
    assert checksums_valid(rep)


def test_extension_headers_are_walked_and_kept():
    engine = make_engine6()
    ext = IPv6ExtHdrHopByHop() / IPv6ExtHdrDestOpt() / IPv6ExtHdrRouting(segleft=0) / IPv6ExtHdrDestOpt()
    sent = from_client(TCP(sport=40001, dport=80, flags="S") / (b"x" * 3), ext=ext)
    ifindex, req = one(engine.process(frame(sent), 1, 0.0))
    assert ifindex == 2 and req[IPv6].dst == RIPS6[2] and req[TCP].dport == 8080
    assert IPv6ExtHdrHopByHop in req and IPv6ExtHdrRouting in req and len(req) == len(sent)
    assert checksums_valid(req)


def test_first_fragment_is_forwarded_and_later_ones_dropped():
    engine = make_engine6(proto=17, vport=53, rport=5353)
    payload = UDP(sport=50000, dport=53, len=8 + 2000, chksum=0x1234) / (b"a" * 1000)
    first = from_client(payload, ext=IPv6ExtHdrFragment(offset=0, m=1, id=9))
    ifindex, out = one(engine.process(frame(first), 1, 0.0))
    assert ifindex == 2 and out[IPv6].dst == RIPS6[2] and out[IPv6ExtHdrFragment].m == 1
    assert out[UDP].dport == 5353
    # the checksum covers the whole datagram: patched by the rewrite's delta, as the kernel does
    delta = checksum.combine(checksum.delta(pack_ip(VIP6), pack_ip(RIPS6[2])), checksum.delta(b"\0\x35", b"\x14\xe9"))
    assert out[UDP].chksum == checksum.apply(0x1234, delta)
    later = from_client(b"b" * 1000, ext=IPv6ExtHdrFragment(offset=126, m=0, id=9, nh=17))
    assert engine.process(frame(later), 1, 0.1) == []
    assert engine.drops["fragment"] == 1


def test_partial_checksum_gets_the_new_pseudo_header():
    engine = make_engine6()
    pkt = from_client(TCP(sport=40002, dport=80, flags="S"))
    raw = bytearray(bytes(pkt))
    l4 = 14 + 40
    length = len(raw) - l4
    pseudo = checksum.fold(checksum.ones_sum(pack_ip(CLIENT6) + pack_ip(VIP6)) + 6 + length)
    raw[l4 + 16:l4 + 18] = pseudo.to_bytes(2, "big")
    buf = bytearray(vnet.pack(flags=vnet.F_NEEDS_CSUM, csum_start=l4, csum_offset=16)) + raw
    ifindex, out = one(engine.process(buf, 1, 0.0))
    expect = checksum.fold(checksum.ones_sum(pack_ip(CLIENT6) + pack_ip(RIPS6[2])) + 6 + length)
    assert out[TCP].chksum == expect


def test_persistence_groups_clients_by_ipv6_prefix():
    engine = make_engine6(flags=SVC_F_PERSISTENT, timeout=300, netmask=prefix_mask(64, 16))
    rips = []
    for n, client in enumerate(("2001:db8:c::100", "2001:db8:c::200", "2001:db8:c:1::100")):
        out = engine.process(frame(from_client(TCP(sport=41000 + n, dport=80, flags="S"), src=client)), 1, float(n))
        rips.append(one(out)[1][IPv6].dst) if out else rips.append(None)
    assert rips[0] == rips[1] == RIPS6[2]  # the same /64: its template's real server
    assert rips[2] == RIPS6[1]  # another /64: scheduled (rr's next)
    snets = sorted(t.caddr for t in engine.conns.templates.values())
    assert snets == [pack_ip("2001:db8:c::"), pack_ip("2001:db8:c:1::")]


# -- DR over IPv6 -----------------------------------------------------------------------------------


def test_dr_changes_only_the_macs_and_hop_limit():
    engine = make_engine6(method=Method.ROUTE)
    sent = from_client(TCP(sport=40000, dport=80, flags="S") / b"hello")
    ifindex, out = one(engine.process(frame(sent), 1, 0.0))
    assert ifindex == 2 and (out.src, out.dst) == (DIP_MAC, RS_MAC[RIPS6[2]])
    assert (out[IPv6].src, out[IPv6].dst, out[IPv6].hlim, out[TCP].dport) == (CLIENT6, VIP6, 63, 80)
    assert bytes(out[IPv6])[8:] == bytes(sent[IPv6])[8:] and checksums_valid(out)


# -- neighbour discovery and echo -------------------------------------------------------------------


def solicitation(target: str, src: str = CLIENT6) -> Ether:
    group = "ff02::1:ff" + pack_ip(target)[13:].hex(":", 2).replace(":", "")[:2] + ":" + pack_ip(target)[14:].hex()
    return (Ether(src=CLIENT_MAC, dst="33:33:ff" + ":" + pack_ip(target)[13:].hex(":"))
            / IPv6(src=src, dst=group, hlim=255) / ICMPv6ND_NS(tgt=target) / ICMPv6NDOptSrcLLAddr(lladdr=CLIENT_MAC))


def test_neighbour_solicitation_for_a_vip_is_answered():
    engine = make_engine6()
    ifindex, na = one(engine.process(frame(solicitation(VIP6)), 1, 0.0))
    assert ifindex == 1 and (na.src, na.dst) == (VIP_MAC, CLIENT_MAC)
    assert (na[IPv6].src, na[IPv6].dst, na[IPv6].hlim) == (VIP6, CLIENT6, 255)
    assert na[ICMPv6ND_NA].tgt == VIP6 and (na[ICMPv6ND_NA].S, na[ICMPv6ND_NA].O, na[ICMPv6ND_NA].R) == (1, 1, 0)
    assert na[ICMPv6NDOptDstLLAddr].lladdr == VIP_MAC
    assert checksums_valid(na)
    assert engine.process(frame(solicitation("2001:db8:f::99")), 1, 0.0) == []  # not ours
    bad = solicitation(VIP6)
    bad[IPv6].hlim = 64  # not from the link (RFC 4861: hop limit 255 only)
    assert engine.process(frame(bad), 1, 0.0) == []


def test_announce_sends_unsolicited_advertisements():
    engine = make_engine6()
    out = engine.announce([pack_ip(VIP6)])
    assert [i for i, _ in out] == [1, 2]
    na = parse(out[0][1])
    assert na.dst == "33:33:00:00:00:01" and na[IPv6].dst == "ff02::1" and na[IPv6].hlim == 255
    assert na[ICMPv6ND_NA].tgt == VIP6 and (na[ICMPv6ND_NA].S, na[ICMPv6ND_NA].O) == (0, 1)
    assert na[ICMPv6NDOptDstLLAddr].lladdr == VIP_MAC and checksums_valid(na)


def test_echo_request_to_a_vip_is_answered():
    engine = make_engine6()
    req = from_client(ICMPv6EchoRequest(id=7, seq=3, data=b"ping"))
    ifindex, rep = one(engine.process(frame(req), 1, 0.0))
    assert ifindex == 1 and (rep[IPv6].src, rep[IPv6].dst) == (VIP6, CLIENT6)
    assert (rep[ICMPv6EchoReply].id, rep[ICMPv6EchoReply].seq, rep[ICMPv6EchoReply].data) == (7, 3, b"ping")
    assert checksums_valid(rep)


# -- ICMPv6 errors ----------------------------------------------------------------------------------


def test_errors_about_nat_connections_are_translated():
    engine = make_engine6()
    syn = from_client(TCP(sport=40000, dport=80, flags="S"))
    engine.process(frame(syn), 1, 0.0)
    rip = RIPS6[2]
    # from the real server's side (a router there), quoting the request as it left: CIP -> RIP:8080
    quoted = IPv6(src=CLIENT6, dst=rip, hlim=63) / TCP(sport=40000, dport=8080, flags="S")
    err = (Ether(src=RS_MAC[rip], dst=DIP_MAC) / IPv6(src="fd00:1::99", dst=CLIENT6)
           / ICMPv6PacketTooBig(mtu=1400) / bytes(quoted))
    ifindex, out = one(engine.process(frame(err), 2, 0.1))
    assert ifindex == 1 and (out[IPv6].src, out[IPv6].dst) == (VIP6, CLIENT6) and out[ICMPv6PacketTooBig].mtu == 1400
    quote = out[IPerror6]
    assert (quote.src, quote.dst, out[TCPerror].sport, out[TCPerror].dport) == (CLIENT6, VIP6, 40000, 80)
    assert checksums_valid(out)
    # from the client's side, quoting a reply as the client saw it: VIP:80 -> CIP
    quoted = IPv6(src=VIP6, dst=CLIENT6) / TCP(sport=80, dport=40000, flags="SA")
    err = from_client(ICMPv6DestUnreach(code=4) / bytes(quoted), src="2001:db8:c::fe")
    ifindex, out = one(engine.process(frame(err), 1, 0.2))
    assert ifindex == 2 and out[IPv6].dst == rip and out.dst == RS_MAC[rip]
    assert (out[IPerror6].src, out[TCPerror].sport) == (rip, 8080) and checksums_valid(out)


def test_hop_limit_exhausted_is_answered_with_time_exceeded():
    engine = make_engine6()
    sent = from_client(TCP(sport=40000, dport=80, flags="S"), hlim=1)
    ifindex, out = one(engine.process(frame(sent), 1, 0.0))
    assert ifindex == 1 and (out[IPv6].src, out[IPv6].dst) == (VIP6, CLIENT6)
    assert out[ICMPv6TimeExceeded].code == 0 and bytes(out[ICMPv6TimeExceeded].payload) == bytes(sent[IPv6])
    assert checksums_valid(out) and engine.drops["ttl_exceeded"] == 1


@pytest.mark.parametrize("method", [Method.MASQ, Method.ROUTE])
def test_too_big_for_the_real_servers_link_is_answered_with_packet_too_big(method):
    engine = make_engine6(method=method, rs_mtu=1280)
    engine.process(frame(from_client(TCP(sport=40000, dport=80, flags="S"))), 1, 0.0)
    big = from_client(TCP(sport=40000, dport=80, flags="A") / (b"z" * 1300))
    ifindex, out = one(engine.process(frame(big), 1, 0.1))
    assert ifindex == 1 and (out[IPv6].src, out[IPv6].dst) == (VIP6, CLIENT6) and out[ICMPv6PacketTooBig].mtu == 1280
    assert len(out[IPv6]) == 1280  # the quote fills the minimum MTU, no more
    assert bytes(out[ICMPv6PacketTooBig].payload) == bytes(big[IPv6])[:1280 - 48]
    assert checksums_valid(out) and engine.drops["packet_too_big"] == 1


def test_no_real_server_is_answered_with_port_unreachable():
    engine = make_engine6()
    svc = engine.table.find(6, pack_ip(VIP6), 80)
    for d in list(svc.dests):
        engine.table.del_dest(svc, d.addr, d.port)
    sent = from_client(TCP(sport=40000, dport=80, flags="S"))
    ifindex, out = one(engine.process(frame(sent), 1, 0.0))
    assert (out[IPv6].src, out[ICMPv6DestUnreach].code) == (VIP6, 4) and checksums_valid(out)


def test_ipv4_and_ipv6_services_side_by_side():
    from scapy.layers.inet import IP as IPv4

    engine = make_engine6()
    v4 = engine.table.add_service(VirtualService(6, pack_ip("192.0.2.1"), 80, "rr"))
    engine.table.add_dest(v4, RealServer(pack_ip("10.1.0.11"), 8080, method=Method.MASQ))
    engine.routes.hops[pack_ip("10.1.0.11")] = Hop(2, mac("02:00:00:00:02:0b"), mac(DIP_MAC))
    out4 = engine.process(frame(Ether(src=CLIENT_MAC, dst=VIP_MAC) / IPv4(src="192.0.2.100", dst="192.0.2.1")
                                / TCP(sport=1, dport=80, flags="S")), 1, 0.0)
    out6 = engine.process(frame(from_client(TCP(sport=1, dport=80, flags="S"))), 1, 0.0)
    assert parse(out4[0][1])[IPv4].dst == "10.1.0.11" and parse(out6[0][1])[IPv6].dst == RIPS6[2]
    assert len(engine.conns) == 2


def test_truncated_and_corrupted_ipv6_frames_never_raise():
    import random

    engine = make_engine6()
    engine.process(frame(from_client(TCP(sport=40000, dport=80, flags="S"))), 1, 0.0)
    quoted = IPv6(src=VIP6, dst=CLIENT6) / TCP(sport=80, dport=40000)
    samples = [
        from_client(TCP(sport=40000, dport=80, flags="A") / b"data",
                    ext=IPv6ExtHdrHopByHop() / IPv6ExtHdrFragment(offset=0, m=1)),
        from_client(ICMPv6DestUnreach() / bytes(quoted)),
        solicitation(VIP6),
        from_client(ICMPv6EchoRequest(data=b"x" * 20)),
    ]
    rng = random.Random(15)
    for sample in samples:
        raw = bytes(frame(sample))
        for cut in range(len(raw)):
            engine.process(bytearray(raw[:cut]), 1, 1.0)
        for _ in range(300):
            buf = bytearray(raw)
            for _ in range(rng.randrange(1, 4)):
                buf[rng.randrange(vnet.VNET_HDR_LEN + 12, len(buf))] = rng.randrange(256)
            engine.process(buf, 1, 1.0)


# -- TUN over IPv6 (IPv6 in IPv6) -------------------------------------------------------------------


def make_tun6(rs_mtu: int = 1500, tun_type: str = "ipip") -> Engine:
    engine = make_engine6(method=Method.TUNNEL, rs_mtu=rs_mtu)
    svc = engine.table.find(6, pack_ip(VIP6), 80)
    for dest in svc.dests:
        dest.tun_type = tun_type
    return engine


def test_tunnel_wraps_the_request_in_ipv6_from_the_director():
    engine = make_tun6()
    sent = from_client(TCP(sport=40000, dport=80, flags="S") / b"hello", hlim=30)
    sent[IPv6].tc = 0x03 << 2 | 3  # a DSCP and CE: the outer gets ECT(0)
    ifindex, out = one(engine.process(frame(sent), 1, 0.0))
    assert ifindex == 2 and out.dst == RS_MAC[RIPS6[2]]
    outer, inner = out[IPv6], out[IPv6].payload
    assert (outer.src, outer.dst, outer.nh, outer.hlim, outer.tc) == (DIP6, RIPS6[2], 41, 29, 0x03 << 2 | 2)
    assert outer.plen == len(bytes(sent[IPv6]))
    assert isinstance(inner, IPv6) and (inner.src, inner.dst, inner.hlim, inner[TCP].dport) == (CLIENT6, VIP6, 29, 80)
    expect = sent[IPv6].copy()
    expect.hlim = 29
    assert bytes(inner) == bytes(expect) and checksums_valid(Ether() / inner)


def test_tunnel_completes_a_partial_checksum():
    engine = make_tun6()
    pkt = from_client(TCP(sport=40003, dport=80, flags="S") / b"data")
    raw = bytearray(bytes(pkt))
    l4 = 14 + 40
    pseudo = checksum.fold(checksum.ones_sum(pack_ip(CLIENT6) + pack_ip(VIP6)) + 6 + len(raw) - l4)
    raw[l4 + 16:l4 + 18] = pseudo.to_bytes(2, "big")
    buf = bytearray(vnet.pack(flags=vnet.F_NEEDS_CSUM, csum_start=l4, csum_offset=16)) + raw
    _, out = one(engine.process(buf, 1, 0.0))
    assert checksums_valid(Ether() / out[IPv6].payload)


def test_tunnel_too_big_and_the_real_servers_path_packet_too_big_are_told_to_the_client():
    engine = make_tun6(rs_mtu=1300)
    engine.process(frame(from_client(TCP(sport=40000, dport=80, flags="S"))), 1, 0.0)
    big = from_client(TCP(sport=40000, dport=80, flags="A") / (b"z" * 1201))  # 1261 + the outer 40 > 1300
    ifindex, out = one(engine.process(frame(big), 1, 0.1))
    assert (out[IPv6].src, out[ICMPv6PacketTooBig].mtu) == (VIP6, 1260) and checksums_valid(out)
    # a router between the director and the real server says our tunnel packet was too big
    small = from_client(TCP(sport=40000, dport=80, flags="A") / (b"y" * 1100))
    _, tunnelled = one(engine.process(frame(small), 1, 0.2))
    err = (Ether(src=RS_MAC[RIPS6[2]], dst=DIP_MAC) / IPv6(src="fd00:1::99", dst=DIP6)
           / ICMPv6PacketTooBig(mtu=1280) / bytes(tunnelled[IPv6])[:1232])
    ifindex, out = one(engine.process(frame(err), 2, 0.3))
    assert ifindex == 1 and (out[IPv6].src, out[IPv6].dst, out[ICMPv6PacketTooBig].mtu) == (VIP6, CLIENT6, 1280)
    quote = bytes(out[ICMPv6PacketTooBig].payload)
    assert quote == bytes(tunnelled[IPv6].payload)[:len(quote)] and checksums_valid(out)


@pytest.mark.parametrize("csum", [False, True])
def test_gre_over_ipv6(csum):
    from scapy.layers.l2 import GRE
    from scapy.utils import checksum as scapy_checksum

    engine = make_tun6(tun_type="gre")
    if csum:
        for dest in engine.table.find(6, pack_ip(VIP6), 80).dests:
            dest.tun_flags = "csum"
    sent = from_client(TCP(sport=40000, dport=80, flags="S") / b"hi", hlim=20)
    ifindex, out = one(engine.process(frame(sent), 1, 0.0))
    outer = out[IPv6]
    assert ifindex == 2 and (outer.src, outer.dst, outer.nh, outer.hlim) == (DIP6, RIPS6[2], 47, 19)
    gre = out[GRE]
    assert gre.proto == 0x86DD and gre.chksum_present == csum
    inner = IPv6(bytes(gre.payload))
    expect = sent[IPv6].copy()
    expect.hlim = 19
    assert bytes(inner) == bytes(expect)
    if csum:
        assert scapy_checksum(bytes(gre)) == 0  # the GRE checksum covers its header and the packet
    assert outer.plen == len(bytes(gre))


def test_gue_over_ipv6():
    engine = make_tun6(tun_type="gue")
    for dest in engine.table.find(6, pack_ip(VIP6), 80).dests:
        dest.tun_port = 6080
    sent = from_client(TCP(sport=40000, dport=80, flags="S") / b"hi")
    ifindex, out = one(engine.process(frame(sent), 1, 0.0))
    outer = out[IPv6]
    assert ifindex == 2 and (outer.src, outer.dst, outer.nh) == (DIP6, RIPS6[2], 17)
    udp = out[UDP]
    assert udp.dport == 6080 and 32768 <= udp.sport <= 60999 and checksums_valid(out)  # UDP checksum set
    payload = bytes(udp.payload)
    assert payload[:4] == b"\x00\x29\x00\x00"  # GUE version 0, proto_ctype 41
    expect = sent[IPv6].copy()
    expect.hlim = 63
    assert payload[4:] == bytes(expect)
    # no port: refused as for IPv4
    engine = make_tun6(tun_type="gue")
    assert engine.process(frame(sent), 1, 0.0) == [] and engine.drops["tunnel_no_port"] == 1


# -- FULLNAT over IPv6 ------------------------------------------------------------------------------

LIP6 = "fd00:1::100"


def make_fullnat6(proto: int = 6, vport: int = 80, rport: int = 8080, proxy: str = "") -> Engine:
    engine = make_engine6(method=Method.FULLNAT, proto=proto, vport=vport, rport=rport, proxy_protocol=proxy)
    svc = engine.table.find(proto, pack_ip(VIP6), vport)
    engine.table.add_laddr(svc, pack_ip("10.1.0.100"))  # of the other family: not used for IPv6
    engine.table.add_laddr(svc, pack_ip(LIP6))
    return engine


def from_rs_to_lip(rip: str, l4) -> Ether:
    return from_rs(rip, l4, dst=LIP6)


def test_fullnat6_udp_both_directions():
    engine = make_fullnat6(proto=17, vport=53, rport=5353)
    ifindex, req = one(engine.process(frame(from_client(UDP(sport=50000, dport=53) / b"query")), 1, 0.0))
    assert ifindex == 2 and (req[IPv6].src, req[IPv6].dst, req[IPv6].hlim) == (LIP6, RIPS6[2], 63)
    lport = req[UDP].sport
    assert 5000 <= lport <= 65535 and req[UDP].dport == 5353 and checksums_valid(req)
    reply = from_rs_to_lip(RIPS6[2], UDP(sport=5353, dport=lport) / b"answer")
    ifindex, rep = one(engine.process(frame(reply), 2, 0.1))
    assert ifindex == 1 and (rep[IPv6].src, rep[IPv6].dst, rep[UDP].sport, rep[UDP].dport) == (VIP6, CLIENT6, 53, 50000)
    assert checksums_valid(rep)


def handshake(engine: Engine) -> tuple[int, int]:
    """SYN, SYN-ACK, and the (local) port; returns (lport, the client's next sequence number)."""
    _, syn = one(engine.process(frame(from_client(TCP(sport=40000, dport=80, flags="S", seq=1000))), 1, 0.0))
    assert (syn[IPv6].src, syn[IPv6].dst) == (LIP6, RIPS6[2]) and checksums_valid(syn)
    lport = syn[TCP].sport
    synack = from_rs_to_lip(RIPS6[2], TCP(sport=8080, dport=lport, flags="SA", seq=5000, ack=1001,
                                          options=[("MSS", 1440)]))
    _, out = one(engine.process(frame(synack), 2, 0.1))
    assert (out[IPv6].src, out[IPv6].dst, out[TCP].dport) == (VIP6, CLIENT6, 40000) and checksums_valid(out)
    return lport, 1001


def test_fullnat6_delivers_the_client_address_in_toa():
    engine = make_fullnat6()
    lport, seq = handshake(engine)
    ack = from_client(TCP(sport=40000, dport=80, flags="A", seq=seq, ack=5001))
    _, out = one(engine.process(frame(ack), 1, 0.2))
    toa = [o for o in out[TCP].options if o[0] == 254]
    assert toa and toa[0][1] == (40000).to_bytes(2, "big") + pack_ip(CLIENT6)  # kind 254, length 20
    assert out[IPv6].plen == len(bytes(ack[IPv6].payload)) + 20 and out[TCP].sport == lport
    assert checksums_valid(out)
    conn = next(c for c in engine.conns.conns())
    assert not conn.in_flow.flags & F_ENGINE_ONLY and not conn.out_flow.flags & F_ENGINE_ONLY  # to the fast path


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_fullnat6_proxy_protocol_header_and_shifted_sequence_numbers(version):
    engine = make_fullnat6(proxy=version)
    lport, seq = handshake(engine)
    data = from_client(TCP(sport=40000, dport=80, flags="PA", seq=seq, ack=5001) / b"GET / HTTP/1.0\r\n\r\n")
    _, out = one(engine.process(frame(data), 1, 0.2))
    payload = bytes(out[TCP].payload)
    if version == "v1":
        header = f"PROXY TCP6 {CLIENT6} {VIP6} 40000 80\r\n".encode()
    else:
        header = (b"\r\n\r\n\x00\r\nQUIT\n" + bytes((0x21, 0x21, 0, 36)) + pack_ip(CLIENT6) + pack_ip(VIP6)
                  + (40000).to_bytes(2, "big") + (80).to_bytes(2, "big"))
    assert payload == header + b"GET / HTTP/1.0\r\n\r\n" and checksums_valid(out)
    # the server acknowledges the shifted stream: the client sees its own numbering
    ack_back = from_rs_to_lip(RIPS6[2], TCP(sport=8080, dport=lport, flags="A", seq=5001,
                                            ack=seq + len(header) + 18))
    _, rep = one(engine.process(frame(ack_back), 2, 0.3))
    assert rep[TCP].ack == seq + 18 and checksums_valid(rep)
    more = from_client(TCP(sport=40000, dport=80, flags="A", seq=seq + 18, ack=5001) / b"x")
    _, out = one(engine.process(frame(more), 1, 0.4))
    assert out[TCP].seq == seq + 18 + len(header) and checksums_valid(out)


def test_tunnel_cuts_a_tcp_super_frame_to_its_mss():
    engine = make_tun6()
    engine.process(frame(from_client(TCP(sport=40000, dport=80, flags="S", seq=10))), 1, 0.0)
    data = bytes(range(256)) * 12  # 3072 bytes
    big = from_client(TCP(sport=40000, dport=80, flags="PA", seq=11, ack=1) / data)
    raw = bytearray(bytes(big))
    l4 = 14 + 40
    pseudo = checksum.fold(checksum.ones_sum(pack_ip(CLIENT6) + pack_ip(VIP6)) + 6 + len(raw) - l4)
    raw[l4 + 16:l4 + 18] = pseudo.to_bytes(2, "big")
    buf = bytearray(vnet.pack(flags=vnet.F_NEEDS_CSUM, gso_type=vnet.GSO_TCPV6, hdr_len=l4 + 20, gso_size=1000,
                              csum_start=l4, csum_offset=16)) + raw
    out = engine.process(buf, 1, 0.1)
    assert len(out) == 4 and {i for i, _ in out} == {2}
    inners = [IPv6(bytes(parse(b)[IPv6].payload)) for _, b in out]
    assert [q[TCP].seq for q in inners] == [11, 1011, 2011, 3011]
    assert [len(q[TCP].payload) for q in inners] == [1000, 1000, 1000, 72]
    assert [str(q[TCP].flags) for q in inners] == ["A", "A", "A", "PA"]
    assert b"".join(bytes(q[TCP].payload) for q in inners) == data
    assert all(checksums_valid(Ether() / q) and q.hlim == 63 for q in inners)
    assert all(vnet.unpack(b)[:2] == (0, vnet.GSO_NONE) for _, b in out)


def test_an_oversized_frame_parked_for_its_neighbour_is_not_cut_as_ipv4():
    engine = make_engine6(rs_mtu=1280)
    rip = pack_ip(RIPS6[2])
    hop = engine.routes.hops.pop(rip)  # the real server's neighbour is not known yet
    engine.process(frame(from_client(TCP(sport=40000, dport=80, flags="S"))), 1, 0.0)
    big = from_client(TCP(sport=40000, dport=80, flags="A") / (b"z" * 1300))
    assert engine.process(frame(big), 1, 0.1) == []  # parked: no MTU to check against yet
    engine.routes.hops[rip] = hop
    out = engine.flush_parked(0.2)
    assert len(out) == 1 and parse(out[0][1])[IPv6].dst == RIPS6[2]  # the SYN goes
    assert engine.drops["packet_too_big"] == 1  # the big one is dropped, never fragmented as IPv4
