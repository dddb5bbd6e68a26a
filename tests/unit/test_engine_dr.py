"""Direct routing through the sans-I/O engine: only the MACs, the TTL and the IP checksum change."""

from __future__ import annotations

from scapy.layers.inet import ICMP, IP, TCP, UDP, IPerror
from scapy.layers.l2 import Ether

from pylvs.engine.services import Method, pack_ip
from pylvs.ipvs_uapi import CONN_F_NOOUTPUT
from pylvs.packet import vnet
from tests.unit.director import (
    CLIENT,
    DIP_MAC,
    RIPS,
    VIP,
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
from tests.unit.test_engine_nat import built, complete_partial, pseudo_sum


def dr_engine(**kw):
    return make_engine(Method.ROUTE, **kw)


def same_but_ttl(before: bytes, after: bytes) -> bool:
    """The IP packets are equal except for the TTL byte and the header checksum."""
    return len(before) == len(after) and all(
        a == b for i, (a, b) in enumerate(zip(before, after, strict=True)) if i not in (8, 10, 11))


def test_only_the_macs_ttl_and_ip_checksum_change():
    engine = dr_engine()
    original = from_client(TCP(sport=40000, dport=80, flags="S", seq=1000, options=[("MSS", 1460)]) / b"hi")
    out = engine.process(frame(original), 1, 0.0)
    assert len(out) == 1
    ifindex, buf = out[0]
    pkt = parse(buf)
    assert ifindex == 2
    assert pkt.src == DIP_MAC and pkt.dst == rs_mac(RIPS[2])  # rr starts at the newest real server
    assert pkt[IP].src == CLIENT and pkt[IP].dst == VIP  # the VIP stays: the real server owns it too
    assert pkt[IP].ttl == 63
    sent = bytes(original[IP])
    got = bytes(pkt[IP])
    assert same_but_ttl(sent, got)
    assert got[20:] == sent[20:]  # L4 byte for byte, checksum included
    assert checksums_valid(pkt)
    assert vnet.unpack(buf) == (0, 0, 0, 0, 0, 0)


def test_port_mapping_is_ignored():
    engine = dr_engine(rport=8080)  # ipvsadm forces the real server port to the virtual one
    pkt = parse(engine.process(frame(from_client(TCP(sport=40000, dport=80, flags="S"))), 1, 0.0)[0][1])
    assert pkt[TCP].dport == 80 and pkt[IP].dst == VIP


def test_udp_is_forwarded_untouched():
    engine = dr_engine(proto=17, vport=53)
    original = from_client(UDP(sport=50000, dport=53) / b"query")
    pkt = parse(engine.process(frame(original), 1, 0.0)[0][1])
    assert bytes(pkt[UDP]) == bytes(IP(bytes(original[IP]))[UDP])
    assert pkt.dst == rs_mac(RIPS[2]) and checksums_valid(pkt)


def test_partial_checksum_and_vnet_header_are_left_as_they_are():
    engine = dr_engine()
    pkt = from_client(TCP(sport=40000, dport=80, flags="S") / (b"x" * 100))
    built = pkt.__class__(bytes(pkt))
    built[TCP].chksum = pseudo_sum(CLIENT, VIP, 6, built[IP].len - 20)
    hdr = vnet.pack(flags=vnet.F_NEEDS_CSUM, csum_start=34, csum_offset=16)
    _, buf = engine.process(bytearray(hdr + bytes(built)), 1, 0.0)[0]
    assert bytes(buf[:vnet.VNET_HDR_LEN]) == hdr
    res = parse(buf)
    assert res[TCP].chksum == built[TCP].chksum  # still the pseudo-header sum: the kernel finishes it
    assert checksums_valid(Ether(complete_partial(res)))


def test_gso_super_frame_passes_intact():
    engine = dr_engine()
    engine.process(frame(from_client(TCP(sport=40000, dport=80, flags="S"))), 1, 0.0)
    payload = bytes(range(256)) * 250
    pkt = from_client(TCP(sport=40000, dport=80, flags="A") / payload)
    built = pkt.__class__(bytes(pkt))
    built[TCP].chksum = pseudo_sum(CLIENT, VIP, 6, built[IP].len - 20)
    hdr = dict(flags=vnet.F_NEEDS_CSUM, gso_type=vnet.GSO_TCPV4, hdr_len=54, gso_size=1448, csum_start=34,
               csum_offset=16)
    out = engine.process(frame(built, **hdr), 1, 0.0)
    assert len(out) == 1
    _, buf = out[0]
    assert vnet.unpack(buf) == (vnet.F_NEEDS_CSUM, vnet.GSO_TCPV4, 54, 1448, 34, 16)
    res = parse(buf)
    assert res.dst == rs_mac(RIPS[2]) and bytes(res[TCP].payload) == payload
    assert same_but_ttl(bytes(built[IP]), bytes(res[IP]))


def test_connection_expects_no_replies():
    engine = dr_engine()
    engine.process(frame(from_client(TCP(sport=40000, dport=80, flags="S"))), 1, 0.0)
    conn = engine.conns.conns()[0]
    assert conn.flags & CONN_F_NOOUTPUT and conn.out_key == b""
    # A reply the real server sends from the VIP is not the director's business, even if it sees it.
    reply = from_rs(RIPS[2], TCP(sport=80, dport=40000, flags="SA"))
    reply[IP].src = VIP
    assert engine.process(frame(reply.__class__(bytes(reply))), 2, 0.1) == []
    svc = next(iter(engine.table))
    assert svc.stats.counters()[2] == 0  # OutPkts stays 0 in DR


def test_input_only_tcp_states():
    engine = dr_engine()
    engine.process(frame(from_client(TCP(sport=40000, dport=80, flags="S"))), 1, 0.0)
    conn = engine.conns.conns()[0]
    assert conn.state_name() == "SYN_RECV"
    engine.process(frame(from_client(TCP(sport=40000, dport=80, flags="A"))), 1, 0.1)
    assert conn.state_name() == "ESTABLISHED"
    engine.process(frame(from_client(TCP(sport=40000, dport=80, flags="FA"))), 1, 0.2)
    assert conn.state_name() == "FIN_WAIT"


def test_icmp_from_the_client_side_is_forwarded_as_it_is():
    engine = dr_engine()
    engine.process(frame(from_client(TCP(sport=40000, dport=80, flags="S"))), 1, 0.0)
    quoted = IP(src=VIP, dst=CLIENT) / TCP(sport=80, dport=40000, flags="SA")
    err = from_client(ICMP(type=3, code=4, nexthopmtu=1400) / bytes(quoted)[:28])
    out = engine.process(frame(err), 1, 0.1)
    assert len(out) == 1 and out[0][0] == 2
    res = parse(out[0][1])
    assert res.dst == rs_mac(RIPS[2]) and res[IP].dst == VIP and res[IPerror].src == VIP
    assert same_but_ttl(bytes(err[IP]), bytes(res[IP])) and res[IP].ttl == 63
    assert checksums_valid(res)


def test_ttl_one_gets_time_exceeded_from_the_vip():
    engine = dr_engine()
    engine.process(frame(from_client(TCP(sport=40000, dport=80, flags="S"))), 1, 0.0)
    last = from_client(TCP(sport=40000, dport=80, flags="A", seq=1) / b"data", ttl=1)
    kernel_icmp_error(engine.process(frame(last), 1, 0.1), bytes(last[IP]), VIP, CLIENT, 11, 0)
    assert engine.drops["ttl_exceeded"] == 1


def test_too_big_without_df_is_fragmented():
    """The issue's case: 2000 bytes without DF leave as 1500 + 520, same ID, TTL 63, the rest untouched."""
    engine = dr_engine()
    engine.process(frame(from_client(TCP(sport=40000, dport=80, flags="S"))), 1, 0.0)
    big = built(from_client(TCP(sport=40000, dport=80, flags="A", seq=1) / (bytes(range(200)) * 10)[:1960]), id=777)
    out = engine.process(frame(big), 1, 0.1)
    assert [len(bytes(parse(b)[IP])) for _, b in out] == [1500, 520]
    assert all(parse(b).dst == rs_mac(RIPS[2]) for _, b in out)
    whole = reassembled(out, 1500, 2)
    expected = big[IP].copy()
    expected.ttl, expected.chksum = 63, None
    assert bytes(whole) == bytes(IP(bytes(expected)))


def test_round_robin_reaches_every_real_server_by_mac():
    engine = dr_engine()
    macs = [parse(engine.process(frame(from_client(TCP(sport=41000 + i, dport=80, flags="S"))), 1, 0.0)[0][1]).dst
            for i in range(6)]
    assert macs == [rs_mac(r) for r in (RIPS[2], RIPS[1], RIPS[0])] * 2


def test_unresolved_neighbour_parks_the_frame():
    engine = dr_engine()
    rip = pack_ip(RIPS[2])
    hop = engine.routes.hops.pop(rip)
    assert engine.process(frame(from_client(TCP(sport=1, dport=80, flags="S"))), 1, 0.0) == []
    engine.routes.hops[rip] = hop
    out = engine.flush_parked(1.0)
    assert len(out) == 1
    pkt = parse(out[0][1])
    assert pkt.dst == rs_mac(RIPS[2]) and pkt.src == DIP_MAC and pkt[IP].ttl == 63 and checksums_valid(pkt)


def test_too_big_with_df_gets_fragmentation_needed_from_the_vip():
    from pylvs.engine.hops import Hop
    from tests.unit.director import CLIENT, RIPS, VIP, mac, make_engine, rs_mac

    e = make_engine(method=Method.ROUTE, rport=80)
    e.routes.hops[pack_ip(RIPS[2])] = Hop(2, mac(rs_mac(RIPS[2])), mac("02:00:00:00:02:01"), mtu=1400)
    big = built(from_client(TCP(sport=40000, dport=80, flags="S") / (b"x" * 1400)), flags="DF")
    out = e.process(frame(big), 1, 0.0)
    quoted = big[IP].copy()
    quoted.ttl, quoted.chksum = 63, None  # the kernel decrements before it checks the MTU
    res = kernel_icmp_error(out, bytes(IP(bytes(quoted))), VIP, CLIENT, 3, 4, mtu=1400)
    assert res[IPerror].src == CLIENT and res[IPerror].ttl == 63
    small = from_client(TCP(sport=40000, dport=80, flags="S") / (b"x" * 1000))  # the same connection
    small[IP].flags = "DF"
    ifindex, buf = e.process(frame(small), 1, 0.0)[0]
    assert ifindex == 2 and parse(buf).dst == rs_mac(RIPS[2])  # forwarded: it fits


def test_fragments_after_the_first_keep_only_the_copied_options():
    """ip_options_fragment: record route (not copied) becomes NOPs, router alert (copied) stays."""
    from scapy.layers.inet import IPOption_NOP, IPOption_Router_Alert, IPOption_RR

    engine = dr_engine()
    engine.process(frame(from_client(TCP(sport=40000, dport=80, flags="S"))), 1, 0.0)
    options = [IPOption_RR(routers=["0.0.0.0"]), IPOption_NOP(), IPOption_Router_Alert()]
    big = built(from_client(TCP(sport=40000, dport=80, flags="A", seq=1) / (b"o" * 1960)), options=options)
    assert big[IP].ihl == 8
    out = engine.process(frame(big), 1, 0.1)
    heads = [bytes(parse(b)[IP])[:32] for _, b in out]
    # 1500 - 32 is no multiple of 8: 1464 payload bytes, then the remaining 1980 - 1464
    assert [len(bytes(parse(b)[IP])) for _, b in out] == [32 + 1464, 32 + 1980 - 1464]
    assert heads[0][20:] == bytes(big[IP])[20:32]
    assert heads[1][20:] == b"\x01" * 8 + bytes(big[IP])[28:32]
    whole = reassembled(out, 1500, 2)
    assert bytes(whole[TCP].payload) == b"o" * 1960 and whole.ttl == 63
