"""IP tunneling through the sans-I/O engine: every header the three encapsulations add, checked by scapy."""

from __future__ import annotations

import struct
import time

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP, IPerror, TCPerror
from scapy.layers.l2 import GRE, Ether
from scapy.packet import Raw

from pylvs.engine.forward.tun import LOCAL_PORT_RANGE
from pylvs.engine.services import Method, pack_ip
from pylvs.packet import offload, vnet
from tests.unit.director import (
    CLIENT,
    DIP_MAC,
    RIPS,
    VIP,
    frame,
    from_client,
    kernel_icmp_error,
    make_engine,
    parse,
    rs_mac,
)
from tests.unit.test_engine_nat import pseudo_sum

DIP = "10.1.0.1"  # the address of the interface towards the real servers (tests.unit.director)
GUE_PORT = 6080
PAYLOAD = bytes(range(256)) * 250  # 64000 bytes


def tun_engine(kind: str = "ipip", flags: str = "nocsum", proto: int = 6, vport: int = 80, rport: int = 8080):
    engine = make_engine(Method.TUNNEL, rport=rport, proto=proto, vport=vport)
    for svc in engine.table:
        for dest in svc.dests:
            dest.tun_type, dest.tun_flags = kind, flags
            dest.tun_port = GUE_PORT if kind == "gue" else 0
    return engine


def checksums_valid(pkt) -> bool:
    """Every checksum scapy knows in the packet (outer and inner) equals what scapy computes.

    An ICMP error's quote is not checked: it is a truncated copy, not a packet of its own.
    """
    fresh = pkt.__class__(bytes(pkt))
    layer = fresh
    while layer and not isinstance(layer, Raw):
        if layer.name == "GRE":
            if layer.chksum_present:
                layer.chksum = None
        elif hasattr(layer, "chksum") and not (layer.name == "UDP" and layer.chksum == 0):
            layer.chksum = None
        if layer.name == "ICMP":
            break
        layer = layer.payload
    return bytes(fresh) == bytes(pkt)


def inner_of(pkt) -> IP:
    """The tunneled packet, whatever the encapsulation."""
    outer = pkt[IP]
    if outer.proto == 4:
        return outer.payload
    if outer.proto == 47:
        return pkt[GRE].payload
    raw = bytes(pkt[UDP].payload)
    assert raw[:4] == b"\x00\x04\x00\x00"  # GUE version 0, hlen 0, proto_ctype 4 (IPIP), flags 0
    return IP(raw[4:])


def send(engine, pkt, **hdr):
    return engine.process(frame(pkt, **hdr), 1, 0.0)


def syn(sport: int = 40000, **kw):
    return from_client(TCP(sport=sport, dport=80, flags="S", seq=1000), **kw)


def established(engine, sport: int = 40000):
    """Open a connection (the SYN goes to the newest real server, RIPS[2]) and return nothing else."""
    out = send(engine, syn(sport))
    assert len(out) == 1


@pytest.mark.parametrize("kind,proto", [("ipip", 4), ("gue", 17), ("gre", 47)])
def test_request_is_encapsulated_dip_to_rip(kind, proto):
    engine = tun_engine(kind)
    original = syn(ttl=64)
    out = send(engine, original)
    assert len(out) == 1
    ifindex, buf = out[0]
    assert ifindex == 2
    pkt = parse(buf)
    assert pkt.src == DIP_MAC and pkt.dst == rs_mac(RIPS[2])
    outer = pkt[IP]
    assert (outer.src, outer.dst, outer.proto) == (DIP, RIPS[2], proto)
    assert outer.ttl == 63 and outer.ihl == 5 and outer.flags == 0 and outer.frag == 0
    inner = inner_of(pkt)
    assert inner.src == CLIENT and inner.dst == VIP and inner.ttl == 63
    # Only the TTL (and so the header checksum) changed inside: L4 is byte for byte the client's.
    sent = IP(bytes(original[IP]))
    assert bytes(inner[TCP]) == bytes(sent[TCP])
    assert inner[TCP].dport == 80  # no port mapping in tunnel mode, whatever the real server's port
    assert bytes(inner)[:8] == bytes(sent)[:8] and bytes(inner)[9:10] == bytes(sent)[9:10]
    assert bytes(inner)[12:20] == bytes(sent)[12:20]
    assert checksums_valid(pkt) and checksums_valid(inner)
    assert outer.len == len(bytes(outer))


def test_gue_headers_and_flow_port():
    engine = tun_engine("gue")
    _, buf = send(engine, syn(40000))[0]
    pkt = parse(buf)
    udp = pkt[UDP]
    assert udp.dport == GUE_PORT and udp.chksum == 0  # nocsum is the default
    assert LOCAL_PORT_RANGE[0] <= udp.sport < LOCAL_PORT_RANGE[1]
    assert udp.len == 8 + 4 + len(bytes(inner_of(pkt)))
    # The same connection keeps its source port (ECMP on the way keeps its packets in order).
    _, buf2 = send(engine, from_client(TCP(sport=40000, dport=80, flags="A", seq=1001, ack=5)))[0]
    assert parse(buf2)[UDP].sport == udp.sport
    ports = {parse(send(engine, syn(41000 + i))[0][1])[UDP].sport for i in range(30)}
    assert len(ports) > 20  # different flows spread over the range


def test_gue_with_checksum():
    engine = tun_engine("gue", "csum")
    pkt = parse(send(engine, from_client(TCP(sport=40000, dport=80, flags="S") / (b"x" * 33)))[0][1])
    assert pkt[UDP].chksum != 0
    assert checksums_valid(pkt)


@pytest.mark.parametrize("flags", ["csum", "remcsum"])
def test_remcsum_means_udp_checksum_without_the_option(flags):
    engine = tun_engine("gue", flags)
    pkt = parse(send(engine, syn())[0][1])
    assert pkt[UDP].chksum != 0 and checksums_valid(pkt)
    assert bytes(pkt[UDP].payload)[:4] == b"\x00\x04\x00\x00"


def test_gre_headers_with_and_without_checksum():
    pkt = parse(send(tun_engine("gre"), syn())[0][1])
    gre = pkt[GRE]
    assert gre.proto == 0x0800 and gre.chksum_present == 0 and gre.key_present == 0 and gre.seqnum_present == 0
    assert len(bytes(gre)) - len(bytes(gre.payload)) == 4
    pkt = parse(send(tun_engine("gre", "csum"), from_client(TCP(sport=1, dport=80, flags="S") / b"odd"))[0][1])
    gre = pkt[GRE]
    assert gre.chksum_present == 1 and gre.proto == 0x0800
    assert len(bytes(gre)) - len(bytes(gre.payload)) == 8
    assert checksums_valid(pkt)


@pytest.mark.parametrize("tos,outer_tos", [(0x00, 0x00), (0xB8, 0xB8), (0xB9, 0xB9), (0xBA, 0xBA), (0xBB, 0xBA)])
def test_tos_is_copied_and_ce_becomes_ect0(tos, outer_tos):
    engine = tun_engine()
    pkt = syn()
    pkt[IP].tos = tos
    out = parse(send(engine, pkt)[0][1])
    assert out[IP].tos == outer_tos
    assert inner_of(out).tos == tos  # the inner header keeps its own


def test_df_is_copied_to_the_outer_header():
    engine = tun_engine()
    with_df = from_client(TCP(sport=1, dport=80, flags="S"))
    with_df[IP].flags = "DF"
    assert parse(send(engine, with_df)[0][1])[IP].flags == "DF"
    assert parse(send(engine, syn(2))[0][1])[IP].flags == 0


def test_outer_ids_differ_and_ttl_follows_the_inner():
    engine = tun_engine()
    a = parse(send(engine, syn(1, ttl=20))[0][1])
    b = parse(send(engine, syn(2, ttl=200))[0][1])
    assert a[IP].id != b[IP].id
    assert (a[IP].ttl, b[IP].ttl) == (19, 199)


def test_udp_service_through_the_tunnel():
    engine = tun_engine("gue", proto=17, vport=53, rport=5353)
    out = send(engine, from_client(UDP(sport=50000, dport=53) / b"query"))
    pkt = parse(out[0][1])
    inner = inner_of(pkt)
    assert inner[UDP].dport == 53 and bytes(inner[UDP].payload) == b"query"
    assert checksums_valid(inner)


@pytest.mark.parametrize("kind,overhead", [("ipip", 20), ("gue", 32), ("gre", 24)])
def test_too_big_with_df_gets_frag_needed_from_the_vip(kind, overhead):
    engine = tun_engine(kind)
    established(engine)
    big = from_client(TCP(sport=40000, dport=80, flags="A", seq=1001) / (b"z" * 1460))
    big[IP].flags = "DF"
    assert len(IP(bytes(big[IP]))) == 1500
    out = send(engine, big)
    quoted = IP(bytes(big[IP]))
    quoted.ttl, quoted.chksum = 63, None
    res = kernel_icmp_error(out, bytes(IP(bytes(quoted))), VIP, CLIENT, 3, 4, mtu=1500 - overhead)
    assert res[IPerror].src == CLIENT and res[TCPerror].sport == 40000
    assert engine.drops["frag_needed"] == 1
    # One that fits exactly goes through.
    fits = from_client(TCP(sport=40000, dport=80, flags="A", seq=1001) / (b"z" * (1460 - overhead)))
    fits[IP].flags = "DF"
    ifindex, buf = send(engine, fits)[0]
    assert ifindex == 2 and len(bytes(parse(buf))) == 14 + 1500


def test_too_big_without_df_is_sent_as_outer_fragments():
    engine = tun_engine("gue", "csum")
    established(engine)
    big = from_client(TCP(sport=40000, dport=80, flags="A", seq=1001) / (b"z" * 1460))
    out = send(engine, big)
    assert len(out) == 2
    frags = [parse(b) for _, b in out]
    for f in frags:
        assert len(bytes(f)) <= 14 + 1500 and f[IP].flags != "DF" and checksums_valid(Ether(bytes(f)[:34]))
    assert frags[0][IP].flags == "MF" and frags[1][IP].frag * 8 == len(bytes(frags[0][IP].payload))
    assert frags[0][IP].id == frags[1][IP].id
    whole = bytes(frags[0][IP].payload) + bytes(frags[1][IP].payload)
    outer = IP(src=DIP, dst=RIPS[2], proto=17, id=frags[0][IP].id, ttl=frags[0][IP].ttl) / Raw(whole)
    udp = UDP(bytes(whole))
    assert udp.dport == GUE_PORT and udp.len == len(whole)
    assert checksums_valid(IP(bytes(outer)))  # the UDP checksum covers the reassembled datagram
    inner = IP(whole[12:])
    assert bytes(inner[TCP].payload) == b"z" * 1460 and checksums_valid(inner)


def test_partial_checksum_is_completed_before_encapsulation():
    engine = tun_engine("ipip")
    established(engine)
    pkt = from_client(TCP(sport=40000, dport=80, flags="PA", seq=1001) / (b"p" * 777))
    built = pkt.__class__(bytes(pkt))
    built[TCP].chksum = pseudo_sum(CLIENT, VIP, 6, built[IP].len - 20)
    out = send(engine, built, flags=vnet.F_NEEDS_CSUM, csum_start=34, csum_offset=16)
    assert vnet.unpack(out[0][1]) == (0, 0, 0, 0, 0, 0)  # nothing left for an offload to do
    inner = inner_of(parse(out[0][1]))
    assert checksums_valid(inner) and bytes(inner[TCP].payload) == b"p" * 777


def test_partial_udp_checksum_is_completed():
    engine = tun_engine("gre", proto=17, vport=53)
    pkt = from_client(UDP(sport=50000, dport=53) / (b"q" * 99))
    built = pkt.__class__(bytes(pkt))
    built[UDP].chksum = pseudo_sum(CLIENT, VIP, 17, built[IP].len - 20)
    out = send(engine, built, flags=vnet.F_NEEDS_CSUM, csum_start=34, csum_offset=6)
    assert checksums_valid(inner_of(parse(out[0][1])))


def gso_frame(payload: bytes, flags: str = "PA", mss: int = 1448, seq: int = 1001, ip_id: int = 100, tos: int = 0):
    pkt = from_client(TCP(sport=40000, dport=80, flags=flags, seq=seq, ack=77, window=500,
                          options=[("NOP", None), ("NOP", None), ("Timestamp", (1, 2))]) / payload)
    pkt[IP].id = ip_id
    pkt[IP].flags = "DF"
    pkt[IP].tos = tos
    built = pkt.__class__(bytes(pkt))
    built[TCP].chksum = pseudo_sum(CLIENT, VIP, 6, built[IP].len - 20)
    hdr = dict(flags=vnet.F_NEEDS_CSUM, gso_type=vnet.GSO_TCPV4, hdr_len=66, gso_size=mss, csum_start=34,
               csum_offset=16)
    return frame(built, **hdr)


@pytest.mark.parametrize("kind,overhead", [("ipip", 20), ("gue", 32), ("gre", 24)])
def test_gso_super_frame_is_segmented_to_fit_the_tunnel(kind, overhead):
    engine = tun_engine(kind)
    established(engine)
    out = engine.process(gso_frame(PAYLOAD, flags="FPA"), 1, 0.0)
    mss = 1500 - overhead - 20 - 32  # the inner IP and TCP (with timestamps) headers
    assert len(out) == -(-len(PAYLOAD) // mss)
    seq = 1001
    data = b""
    ids = []
    for n, (ifindex, buf) in enumerate(out):
        assert ifindex == 2 and vnet.unpack(buf) == (0, 0, 0, 0, 0, 0)
        pkt = parse(buf)
        assert len(bytes(pkt)) <= 14 + 1500
        assert pkt[IP].src == DIP and pkt[IP].dst == RIPS[2] and pkt[IP].flags == "DF"
        assert checksums_valid(pkt)
        inner = inner_of(pkt)
        assert checksums_valid(inner)
        tcp = inner[TCP]
        assert inner.len == len(bytes(inner)) and inner.ttl == 63 and inner.flags == "DF"
        assert tcp.seq == seq and tcp.ack == 77 and tcp.window == 500
        assert dict(tcp.options)["Timestamp"] == (1, 2)
        last = n == len(out) - 1
        assert str(tcp.flags) == ("FPA" if last else "A")
        chunk = bytes(tcp.payload)
        assert len(chunk) == (mss if not last else len(PAYLOAD) - mss * n)
        seq += len(chunk)
        data += chunk
        ids.append(inner.id)
    assert data == PAYLOAD
    assert ids == list(range(100, 100 + len(out)))


def test_gso_segments_keep_the_senders_mss_when_it_fits():
    engine = tun_engine("ipip")
    established(engine)
    out = engine.process(gso_frame(PAYLOAD[:10000], mss=1000), 1, 0.0)
    sizes = [len(bytes(inner_of(parse(b))[TCP].payload)) for _, b in out]
    assert sizes == [1000] * 10


def test_gso_cwr_only_on_the_first_segment_and_seq_wraps():
    engine = tun_engine("ipip")
    established(engine)
    out = engine.process(gso_frame(PAYLOAD[:5000], flags="AC", seq=0xFFFFFF00), 1, 0.0)
    tcps = [inner_of(parse(b))[TCP] for _, b in out]
    assert [str(t.flags) for t in tcps] == ["AC"] + ["A"] * (len(tcps) - 1)
    assert tcps[1].seq == (0xFFFFFF00 + len(bytes(tcps[0].payload))) & 0xFFFFFFFF
    assert all(checksums_valid(inner_of(parse(b))) for _, b in out)


def test_udp_gso_frame_is_cut_into_datagrams():
    engine = tun_engine("ipip", proto=17, vport=53)
    pkt = from_client(UDP(sport=50000, dport=53) / (b"d" * 3000))
    built = pkt.__class__(bytes(pkt))
    built[UDP].chksum = pseudo_sum(CLIENT, VIP, 17, built[IP].len - 20)
    out = send(engine, built, flags=vnet.F_NEEDS_CSUM, gso_type=vnet.GSO_UDP_L4, gso_size=1200,
               csum_start=34, csum_offset=6)
    inners = [inner_of(parse(b)) for _, b in out]
    assert [len(bytes(i[UDP].payload)) for i in inners] == [1200, 1200, 600]
    assert all(checksums_valid(i) and i[UDP].len == 8 + len(bytes(i[UDP].payload)) for i in inners)


def test_icmp_error_from_the_client_side_goes_through_the_tunnel():
    engine = tun_engine("gre")
    established(engine)
    # Something between the client and the director complains about a reply VIP:80 -> CLIENT.
    quoted = IP(src=VIP, dst=CLIENT) / TCP(sport=80, dport=40000, flags="SA")
    err = from_client(ICMP(type=3, code=4, nexthopmtu=1400) / bytes(quoted)[:28])
    out = send(engine, err)
    assert len(out) == 1 and out[0][0] == 2
    pkt = parse(out[0][1])
    assert pkt[IP].src == DIP and pkt[IP].dst == RIPS[2] and pkt[IP].proto == 47
    inner = inner_of(pkt)
    assert inner[ICMP].type == 3 and inner[ICMP].nexthopmtu == 1400 and inner.dst == VIP
    assert bytes(inner[ICMP]) == bytes(IP(bytes(err[IP]))[ICMP])
    assert checksums_valid(pkt) and checksums_valid(inner)


@pytest.mark.parametrize("kind", ["ipip", "gue", "gre"])
def test_ttl_one_gets_time_exceeded_from_the_vip(kind):
    engine = tun_engine(kind)
    established(engine)
    last = from_client(TCP(sport=40000, dport=80, flags="A", seq=1001), ttl=1)
    kernel_icmp_error(send(engine, last), bytes(last[IP]), VIP, CLIENT, 11, 0)
    assert engine.drops["ttl_exceeded"] == 1


def test_outer_id_is_zero_with_df():
    """ip_select_ident without a socket: ID 0 when DF is set; a counter otherwise."""
    engine = tun_engine("gue")
    first = from_client(TCP(sport=1, dport=80, flags="S"))
    first[IP].flags = "DF"
    second = from_client(TCP(sport=1, dport=80, flags="A", seq=1))
    second[IP].flags = "DF"
    assert [parse(send(engine, p)[0][1])[IP].id for p in (first, second)] == [0, 0]


def test_gso_segments_with_df_count_their_outer_ids_up_from_zero():
    engine = tun_engine("ipip")
    established(engine)
    pkt = gso_frame(PAYLOAD[:4000])
    pkt_ip = IP(bytes(pkt[vnet.VNET_HDR_LEN + 14:]))
    assert pkt_ip.flags == "DF"
    out = engine.process(pkt, 1, 0.0)
    assert [parse(b)[IP].id for _, b in out] == list(range(len(out))) and len(out) == 3


def test_gue_port_of_an_icmp_error_is_its_own_flows():
    """udp_flow_src_port hashes the packet it encapsulates: an ICMP error is a flow of its own."""
    engine = tun_engine("gue")
    established(engine)
    conn_port = parse(send(engine, from_client(TCP(sport=40000, dport=80, flags="A", seq=1001)))[0][1])[UDP].sport
    quoted = IP(src=VIP, dst=CLIENT) / TCP(sport=80, dport=40000, flags="A")
    ports = []
    for code in (4, 3):
        err = from_client(ICMP(type=3, code=code, nexthopmtu=1400) / bytes(quoted)[:28])
        ports.append(parse(send(engine, err)[0][1])[UDP].sport)
    assert ports[0] == ports[1] != conn_port
    assert LOCAL_PORT_RANGE[0] <= ports[0] <= LOCAL_PORT_RANGE[1]


def test_replies_are_not_expected_through_the_director():
    engine = tun_engine()
    established(engine)
    conn = next(iter(engine.conns.conns()))
    assert conn.out_key == b"" and conn.flags & 0x80  # CONN_F_NOOUTPUT: the real server answers directly


def test_unresolved_neighbour_parks_the_encapsulated_frame():
    engine = tun_engine("ipip")
    # Single-armed, as tunnelling directors are: the parked frame's source is that interface's.
    engine.interfaces[1].addrs = set()
    rip = pack_ip(RIPS[2])
    hop = engine.routes.hops.pop(rip)
    assert send(engine, syn()) == []
    engine.routes.hops[rip] = hop
    out = engine.flush_parked(1.0)
    assert len(out) == 1 and out[0][0] == 2
    pkt = parse(out[0][1])
    assert pkt.dst == rs_mac(RIPS[2]) and pkt[IP].src == DIP and pkt[IP].dst == RIPS[2]
    assert checksums_valid(pkt)


def test_gue_without_port_is_refused():
    engine = tun_engine("gue")
    for svc in engine.table:
        for dest in svc.dests:
            dest.tun_port = 0
    assert send(engine, syn()) == []
    assert engine.drops["tunnel_no_port"] == 1


def test_segmentation_cost_per_64k_frame():
    """Software GSO must stay usable: report (and bound, loosely) the cost per 64 KB super-frame."""
    engine = tun_engine("gue", "csum")
    established(engine)
    frames = [gso_frame(PAYLOAD) for _ in range(50)]
    t = time.perf_counter()
    for f in frames:
        engine.process(f, 1, 0.0)
    per_frame = (time.perf_counter() - t) / len(frames)
    print(f"\nsegment+encapsulate 64000 bytes (gue+csum): {per_frame * 1e6:.0f} us per frame")
    assert per_frame < 0.005


def test_segment_helpers_match_scapy_on_odd_sizes():
    pkt = IP(src=CLIENT, dst=VIP, id=7) / TCP(sport=1, dport=2, flags="PA", seq=5) / (b"\x01\xff" * 500 + b"\x07")
    raw = bytearray(bytes(pkt))
    segs = offload.tcp_segments(memoryview(raw), 20, 333)
    assert [len(bytes(IP(s)[TCP].payload)) for s in segs] == [333, 333, 333, 2]
    for s in segs:
        assert checksums_valid(IP(bytes(s)))
    fr = offload.fragments(bytes(IP(src=DIP, dst=RIPS[0], proto=4)), bytes(1000), 500)
    assert [(struct.unpack("!H", h[2:4])[0], off) for h, off in fr] == [(500, 0), (500, 480), (60, 960)]


def test_malformed_gso_frames_are_dropped_not_raised():
    engine = tun_engine("gue", "csum")
    established(engine)
    good = gso_frame(PAYLOAD[:5000])
    bad = bytearray(good)
    bad[24 + 20 + 12] = 0x20  # TCP data offset 2 words: shorter than a TCP header
    assert engine.process(bad, 1, 0.0) == []
    assert engine.drops["malformed"] == 1
    for cut in range(60, len(good), 97):  # truncated frames: lengths no longer add up
        engine.process(bytearray(good[:cut]), 1, 0.0)
    odd = gso_frame(PAYLOAD[:5000])
    odd[1] = 99  # a GSO type we do not segment
    assert engine.process(odd, 1, 0.0) == [] and engine.drops["gso_unsupported"] == 1


@pytest.mark.parametrize("kind", ["ipip", "gue", "gre"])
def test_fragmentation_needed_about_our_tunnel_packet_reaches_the_client(kind):
    """A router between director and real server answers a too-big tunnel packet with an ICMP error
    to the director; the client learns its own path MTU, reduced by the tunnel overhead."""
    engine = tun_engine(kind)
    syn = from_client(TCP(sport=40000, dport=80, flags="S"))
    syn[IP].flags = "DF"
    tunneled = parse(engine.process(frame(syn), 1, 0.0)[0][1])
    overhead = {"ipip": 20, "gue": 32, "gre": 24}[kind]
    router = "10.1.0.254"
    err = (Ether(src=rs_mac(RIPS[2]), dst=DIP_MAC) / IP(src=router, dst=DIP)
           / ICMP(type=3, code=4, nexthopmtu=1400) / bytes(tunneled[IP])[:20 + overhead + 40])
    out = engine.process(frame(err), 2, 0.1)
    assert len(out) == 1
    res = parse(out[0][1])
    assert res[IP].src == VIP and res[IP].dst == CLIENT
    assert (res[ICMP].type, res[ICMP].code, res[ICMP].nexthopmtu) == (3, 4, 1400 - overhead)
    assert res[IPerror].src == CLIENT and res[IPerror].dst == VIP and res[TCPerror].sport == 40000
    assert checksums_valid(res)


def test_icmp_about_an_unknown_tunnel_flow_is_left_alone():
    engine = tun_engine("ipip")
    inner = IP(src=CLIENT, dst=VIP, flags="DF") / TCP(sport=1, dport=80)
    quoted = IP(src=DIP, dst=RIPS[0], proto=4) / inner
    err = (Ether(src=rs_mac(RIPS[0]), dst=DIP_MAC) / IP(src="10.1.0.254", dst=DIP)
           / ICMP(type=3, code=4, nexthopmtu=1400) / bytes(quoted)[:60])
    assert engine.process(frame(err), 2, 0.0) == []
