"""NAT through the sans-I/O engine: every header field the NAT steps name, both directions."""

from __future__ import annotations

import struct

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP, IPerror, TCPerror, UDPerror
from scapy.utils import checksum as scapy_checksum

from pylvs.packet import vnet
from tests.unit.director import (
    CLIENT,
    CLIENT_MAC,
    DIP_MAC,
    RIPS,
    VIP,
    VIP_MAC,
    checksums_valid,
    frame,
    from_client,
    from_rs,
    kernel_icmp_error,
    make_engine,
    parse,
    reassembled,
    rs_mac,
)


def test_tcp_request_is_dnated_to_rip_and_rport():
    engine = make_engine()
    out = engine.process(frame(from_client(TCP(sport=40000, dport=80, flags="S", seq=1000))), 1, 0.0)
    assert len(out) == 1
    ifindex, buf = out[0]
    pkt = parse(buf)
    assert ifindex == 2
    assert pkt.src == DIP_MAC and pkt.dst == rs_mac(RIPS[2])  # rr starts at the newest real server
    assert pkt[IP].src == CLIENT and pkt[IP].dst == RIPS[2]
    assert pkt[TCP].sport == 40000 and pkt[TCP].dport == 8080
    assert pkt[TCP].seq == 1000 and pkt[TCP].flags == "S"
    assert pkt[IP].ttl == 63
    assert checksums_valid(pkt)


def test_tcp_reply_is_snated_to_vip():
    engine = make_engine()
    engine.process(frame(from_client(TCP(sport=40000, dport=80, flags="S"))), 1, 0.0)
    out = engine.process(frame(from_rs(RIPS[2], TCP(sport=8080, dport=40000, flags="SA"))), 2, 0.1)
    assert len(out) == 1
    ifindex, buf = out[0]
    pkt = parse(buf)
    assert ifindex == 1
    assert pkt.src == VIP_MAC and pkt.dst == CLIENT_MAC
    assert pkt[IP].src == VIP and pkt[IP].dst == CLIENT
    assert pkt[TCP].sport == 80 and pkt[TCP].dport == 40000
    assert pkt[IP].ttl == 63
    assert checksums_valid(pkt)


@pytest.mark.parametrize("with_checksum", [True, False])
def test_udp_both_directions(with_checksum):
    engine = make_engine(proto=17, vport=53, rport=5353)
    udp = UDP(sport=50000, dport=53) / b"query"
    pkt = from_client(udp)
    if not with_checksum:
        pkt[UDP].chksum = 0
    ifindex, buf = engine.process(frame(pkt), 1, 0.0)[0]
    req = parse(buf)
    assert ifindex == 2 and req[IP].dst == RIPS[2] and req[UDP].dport == 5353
    assert bytes(req[UDP].payload) == b"query"
    if with_checksum:
        assert checksums_valid(req)
    else:
        assert req[UDP].chksum == 0  # "no checksum" stays so
    reply = from_rs(RIPS[2], UDP(sport=5353, dport=50000) / b"answer")
    ifindex, buf = engine.process(frame(reply), 2, 0.1)[0]
    rep = parse(buf)
    assert ifindex == 1 and rep[IP].src == VIP and rep[UDP].sport == 53 and rep[IP].dst == CLIENT
    assert checksums_valid(rep)


def test_round_robin_over_three_real_servers():
    engine = make_engine()
    seen = []
    for i in range(6):
        ifindex, buf = engine.process(frame(from_client(TCP(sport=41000 + i, dport=80, flags="S"))), 1, 0.0)[0]
        seen.append(parse(buf)[IP].dst)
    assert seen == [RIPS[2], RIPS[1], RIPS[0]] * 2


def pseudo_sum(src: str, dst: str, proto: int, length: int) -> int:
    """The non-complemented pseudo-header sum a CHECKSUM_PARTIAL field holds (computed via scapy)."""
    import socket
    ph = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!BBH", 0, proto, length)
    return ~scapy_checksum(ph) & 0xFFFF


def complete_partial(pkt) -> bytes:
    """Finish a partial L4 checksum as a NIC would: sum from the L4 header on, field included."""
    raw = bytearray(bytes(pkt))
    l4 = 14 + pkt[IP].ihl * 4
    off = l4 + (16 if pkt[IP].proto == 6 else 6)
    c = scapy_checksum(bytes(raw[l4:14 + pkt[IP].len]))
    raw[off:off + 2] = struct.pack("!H", c)
    return bytes(raw)


@pytest.mark.parametrize("proto", [6, 17])
def test_partial_checksum_keeps_pseudo_header_sum(proto):
    engine = make_engine(proto=proto)
    payload = b"x" * 100
    l4 = (TCP(sport=40000, dport=80, flags="S") if proto == 6 else UDP(sport=40000, dport=80)) / payload
    pkt = from_client(l4)
    built = pkt.__class__(bytes(pkt))
    l4len = built[IP].len - 20
    field = pseudo_sum(CLIENT, VIP, proto, l4len)
    layer = built[TCP] if proto == 6 else built[UDP]
    layer.chksum = field
    csum_off = 16 if proto == 6 else 6
    buf = frame(built, flags=vnet.F_NEEDS_CSUM, csum_start=34, csum_offset=csum_off)
    ifindex, out = engine.process(buf, 1, 0.0)[0]
    assert vnet.unpack(out)[0] & vnet.F_NEEDS_CSUM  # still partial: the kernel finishes it
    res = parse(out)
    assert res[IP].dst == RIPS[2]
    got = (res[TCP] if proto == 6 else res[UDP]).chksum
    assert got == pseudo_sum(CLIENT, RIPS[2], proto, l4len)
    finished = res.__class__(complete_partial(res))
    assert checksums_valid(finished)


def test_gso_super_frame_passes_intact():
    engine = make_engine()
    engine.process(frame(from_client(TCP(sport=40000, dport=80, flags="S"))), 1, 0.0)
    engine.process(frame(from_rs(RIPS[2], TCP(sport=8080, dport=40000, flags="SA"))), 2, 0.0)
    payload = bytes(range(256)) * 250  # 64000 bytes: one GSO frame of ~44 segments
    pkt = from_client(TCP(sport=40000, dport=80, flags="A") / payload)
    built = pkt.__class__(bytes(pkt))
    built[TCP].chksum = pseudo_sum(CLIENT, VIP, 6, built[IP].len - 20)
    hdr = dict(flags=vnet.F_NEEDS_CSUM, gso_type=vnet.GSO_TCPV4, hdr_len=54, gso_size=1448,
               csum_start=34, csum_offset=16)
    ifindex, out = engine.process(frame(built, **hdr), 1, 0.0)[0]
    assert vnet.unpack(out) == (vnet.F_NEEDS_CSUM, vnet.GSO_TCPV4, 54, 1448, 34, 16)
    res = parse(out)
    assert ifindex == 2 and res[IP].dst == RIPS[2] and res[TCP].dport == 8080
    assert res[IP].len == 20 + 20 + 64000 and bytes(res[TCP].payload) == payload
    finished = res.__class__(complete_partial(res))
    assert checksums_valid(finished)


def test_icmp_port_unreachable_from_real_server_is_translated():
    engine = make_engine(proto=17, vport=53, rport=5353)
    req = from_client(UDP(sport=50000, dport=53) / b"q")
    _, buf = engine.process(frame(req), 1, 0.0)[0]
    seen_by_rs = parse(buf)[IP]
    err = from_rs(RIPS[2], ICMP(type=3, code=3) / bytes(seen_by_rs))
    ifindex, out = engine.process(frame(err), 2, 0.1)[0]
    res = parse(out)
    assert ifindex == 1
    assert res[IP].src == VIP and res[IP].dst == CLIENT
    assert res[IPerror].src == CLIENT and res[IPerror].dst == VIP
    assert res[UDPerror].sport == 50000 and res[UDPerror].dport == 53
    assert checksums_valid(res)
    inner = res[IPerror].copy()
    inner.chksum = None
    assert IP(bytes(inner))[IP].chksum == res[IPerror].chksum


def test_icmp_frag_needed_from_client_side_reaches_real_server():
    engine = make_engine()
    engine.process(frame(from_client(TCP(sport=40000, dport=80, flags="S"))), 1, 0.0)
    _, buf = engine.process(frame(from_rs(RIPS[2], TCP(sport=8080, dport=40000, flags="SA"))), 2, 0.0)[0]
    reply_seen = parse(buf)[IP]
    err = from_client(ICMP(type=3, code=4, nexthopmtu=1400) / bytes(reply_seen)[:28])
    ifindex, out = engine.process(frame(err), 1, 0.1)[0]
    res = parse(out)
    assert ifindex == 2 and res[IP].dst == RIPS[2] and res[IP].src == CLIENT
    assert res[IPerror].src == RIPS[2] and res[TCPerror].sport == 8080 and res[TCPerror].dport == 40000
    assert checksums_valid(res)


def test_no_destination_sends_port_unreachable_to_client():
    engine = make_engine(rips=[])
    out = engine.process(frame(from_client(TCP(sport=40000, dport=80, flags="S"))), 1, 0.0)
    assert len(out) == 1
    res = parse(out[0][1])
    assert res[IP].src == VIP and res[IP].dst == CLIENT
    assert res[ICMP].type == 3 and res[ICMP].code == 3
    assert res[IPerror].dst == VIP
    assert checksums_valid(res)
    assert engine.drops["no_dest"] == 1


def test_echo_request_to_vip_is_answered():
    engine = make_engine()
    out = engine.process(frame(from_client(ICMP(type=8, id=7, seq=1) / b"ping")), 1, 0.0)
    res = parse(out[0][1])
    assert res[IP].src == VIP and res[IP].dst == CLIENT and res[ICMP].type == 0 and res[ICMP].id == 7
    assert checksums_valid(res)


def established(engine, sport: int = 40000):
    engine.process(frame(from_client(TCP(sport=sport, dport=80, flags="S", seq=1000))), 1, 0.0)
    engine.process(frame(from_rs(RIPS[2], TCP(sport=8080, dport=sport, flags="SA", ack=1001))), 2, 0.0)
    engine.process(frame(from_client(TCP(sport=sport, dport=80, flags="A", seq=1001))), 1, 0.0)


def built(pkt, **ip_fields):
    """The packet as bytes would carry it, with IP header fields set first (checksums computed after)."""
    for name, value in ip_fields.items():
        setattr(pkt[IP], name, value)
    return pkt.__class__(bytes(pkt))


def test_ttl_one_gets_time_exceeded_from_the_vip_quoting_the_packet_as_it_came():
    engine = make_engine()
    established(engine)
    last = from_client(TCP(sport=40000, dport=80, flags="PA", seq=1001) / b"GET /", ttl=1)
    out = engine.process(frame(last), 1, 0.1)
    kernel_icmp_error(out, bytes(last[IP]), VIP, CLIENT, 11, 0)
    assert engine.drops["ttl_exceeded"] == 1


def test_ttl_one_reply_gets_time_exceeded_from_the_director_not_the_vip():
    """The kernel forwards NAT replies (ip_forward): its error comes from the director's own address
    towards the real server, about the reply as the real server sent it."""
    engine = make_engine()
    established(engine)
    reply = from_rs(RIPS[2], TCP(sport=8080, dport=40000, flags="PA", seq=5001, ack=1001) / b"200", ttl=1)
    out = engine.process(frame(reply), 2, 0.1)
    kernel_icmp_error(out, bytes(reply[IP]), "10.1.0.1", RIPS[2], 11, 0, ifindex=2)


def test_icmp_error_with_ttl_one_gets_no_error_about_it():
    engine = make_engine()
    established(engine)
    quoted = IP(src=VIP, dst=CLIENT) / TCP(sport=80, dport=40000, flags="A")
    err = from_client(ICMP(type=3, code=3) / bytes(quoted)[:28], ttl=1)
    assert engine.process(frame(err), 1, 0.1) == []
    assert engine.drops["ttl_exceeded"] == 1


def test_time_exceeded_keeps_the_tos_bits_under_internetwork_control():
    engine = make_engine()
    established(engine)
    last = from_client(TCP(sport=40000, dport=80, flags="A", seq=1001), ttl=1)
    last = built(last, tos=0x11)  # icmp_send keeps RT_TOS (0x1e) of it: 0x10
    pkt = kernel_icmp_error(engine.process(frame(last), 1, 0.1), bytes(last[IP]), VIP, CLIENT, 11, 0)
    assert pkt[IP].tos == 0xD0


def test_too_big_with_df_gets_fragmentation_needed_quoting_ttl_63_before_the_rewrite():
    """ensure_mtu_is_adequate runs after the TTL decrement and before the NAT rewrite."""
    engine = make_engine()
    established(engine)
    big = built(from_client(TCP(sport=40000, dport=80, flags="A", seq=1001) / (b"d" * 1960)), flags="DF")
    assert big[IP].len == 2000
    quoted = big[IP].copy()
    quoted.ttl, quoted.chksum = 63, None
    out = engine.process(frame(big), 1, 0.1)
    pkt = kernel_icmp_error(out, bytes(IP(bytes(quoted))), VIP, CLIENT, 3, 4, mtu=1500)
    assert pkt[IPerror].dst == VIP and pkt[IPerror].ttl == 63
    assert engine.drops["frag_needed"] == 1


def test_too_big_reply_with_df_gets_fragmentation_needed_from_the_director():
    """ip_forward checks the MTU before decrementing the TTL: the real server's reply is quoted as sent."""
    engine = make_engine()
    established(engine)
    reply = built(from_rs(RIPS[2], TCP(sport=8080, dport=40000, flags="A", seq=5001, ack=1001) / (b"r" * 1960)),
                  flags="DF")
    out = engine.process(frame(reply), 2, 0.1)
    kernel_icmp_error(out, bytes(reply[IP]), "10.1.0.1", RIPS[2], 3, 4, mtu=1500, ifindex=2)


@pytest.mark.parametrize("partial", [False, True])
def test_too_big_without_df_is_fragmented_after_the_rewrite(partial):
    """1500 + 520 bytes, the packet's IP ID, TTL 63 once, checksums right (ip_fragment)."""
    engine = make_engine()
    established(engine)
    big = built(from_client(TCP(sport=40000, dport=80, flags="PA", seq=1001) / (bytes(range(256)) * 8)[:1960]),
                id=4242)
    hdr = {}
    if partial:
        big[TCP].chksum = pseudo_sum(CLIENT, VIP, 6, 1980)
        hdr = dict(flags=vnet.F_NEEDS_CSUM, csum_start=34, csum_offset=16)
    out = engine.process(frame(big, **hdr), 1, 0.1)
    assert [len(bytes(parse(b)[IP])) for _, b in out] == [1500, 520]
    assert all(bytes(b[:vnet.VNET_HDR_LEN]) == bytes(vnet.VNET_HDR_LEN) for _, b in out)
    whole = reassembled(out, 1500, 2)
    expected = IP(src=CLIENT, dst=RIPS[2], id=4242, ttl=63) / TCP(sport=40000, dport=8080, flags="PA", seq=1001)
    expected = IP(bytes(expected / bytes(big[TCP].payload)))
    assert bytes(whole) == bytes(expected)
    assert all(parse(b).dst == rs_mac(RIPS[2]) and parse(b).src == DIP_MAC for _, b in out)


def test_gso_super_frame_with_df_is_not_too_big():
    engine = make_engine()
    established(engine)
    payload = bytes(range(256)) * 40
    pkt = built(from_client(TCP(sport=40000, dport=80, flags="A", seq=1001) / payload), flags="DF")
    pkt[TCP].chksum = pseudo_sum(CLIENT, VIP, 6, pkt[IP].len - 20)
    out = engine.process(frame(pkt, flags=vnet.F_NEEDS_CSUM, gso_type=vnet.GSO_TCPV4, hdr_len=54, gso_size=1448,
                               csum_start=34, csum_offset=16), 1, 0.1)
    assert len(out) == 1 and out[0][0] == 2
    assert vnet.unpack(out[0][1])[1] == vnet.GSO_TCPV4 and bytes(parse(out[0][1])[TCP].payload) == payload


def test_client_never_sees_a_rip_in_replies():
    engine = make_engine()
    for i in range(3):
        engine.process(frame(from_client(TCP(sport=42000 + i, dport=80, flags="S"))), 1, 0.0)
    for i, rip in enumerate(reversed(RIPS)):
        _, buf = engine.process(frame(from_rs(rip, TCP(sport=8080, dport=42000 + i, flags="SA"))), 2, 0.0)[0]
        pkt = parse(buf)
        assert pkt[IP].src == VIP and pkt[TCP].sport == 80


def test_stats_count_packets_and_bytes():
    engine = make_engine()
    syn = from_client(TCP(sport=40000, dport=80, flags="S"))
    engine.process(frame(syn), 1, 0.0)
    engine.process(frame(from_rs(RIPS[2], TCP(sport=8080, dport=40000, flags="SA"))), 2, 0.0)
    svc = next(iter(engine.table))
    dest = svc.find_dest(__import__("socket").inet_aton(RIPS[2]), 8080)
    assert svc.stats.counters() == (1, 1, 1, 40, 40)
    assert dest.stats.counters() == (1, 1, 1, 40, 40)


def test_time_exceeded_is_rate_limited_per_destination_as_icmp_send():
    """A burst of six, then one a second (icmp_ratelimit 1000 ms); fragmentation needed is never limited."""
    engine = make_engine()
    established(engine)
    last = from_client(TCP(sport=40000, dport=80, flags="A", seq=1001), ttl=1)
    sent = [len(engine.process(frame(last), 1, 10.0 + i * 0.01)) for i in range(8)]
    assert sent == [1] * 6 + [0, 0] and engine.drops["icmp_rate_limited"] == 2
    assert len(engine.process(frame(last), 1, 11.1)) == 1  # a second later: one more
    assert len(engine.process(frame(last), 1, 11.2)) == 0
    big = built(from_client(TCP(sport=40000, dport=80, flags="A", seq=1001) / (b"d" * 1960)), flags="DF")
    assert [len(engine.process(frame(big), 1, 11.3)) for _ in range(10)] == [1] * 10
