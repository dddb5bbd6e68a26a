"""The fast path program on IPv6 frames (BPF_PROG_TEST_RUN), against the Python engine.

Each case runs a connection's handshake through the engine (tests/unit/test_engine_ipv6.py's director),
puts the recipes the engine made into the map as the offload writes them, then hands the same
established-flow frame to the engine and to the program: the program must redirect it, and the frame
it sends must be the engine's byte for byte (decoded with scapy field by field as well). Punt rules:
the frame comes back unchanged with TC_ACT_OK and exactly one counter moved.
"""

from __future__ import annotations

import pytest
from scapy.layers.inet import TCP, UDP
from scapy.layers.inet6 import ICMPv6EchoRequest, IPv6, IPv6ExtHdrDestOpt, IPv6ExtHdrFragment, IPv6ExtHdrHopByHop
from scapy.layers.l2 import GRE, Ether

from pylvs.datapath.bpf.events import RetiredEvent
from pylvs.engine import tcpstate
from pylvs.engine.conntrack import Conn
from pylvs.engine.engine import Engine
from pylvs.engine.flow import DIR_IN, DIR_OUT, F_ENGINE_ONLY, VALUE, VALUE_FIELDS, FlowEntry
from pylvs.engine.services import Method, pack_ip
from pylvs.packet import vnet
from tests.integration.bpf_flows import TC_ACT_REDIRECT
from tests.integration.test_bpf_prog import fast, punted, run  # noqa: F401 - fast is a fixture
from tests.unit.director import CLIENT_MAC, DIP_MAC, VIP_MAC
from tests.unit.test_engine_ipv6 import (
    CLIENT6,
    DIP6,
    LIP6,
    RIPS6,
    RS_MAC,
    VIP6,
    checksums_valid,
    frame,
    from_client,
    from_rs,
    make_engine6,
    make_fullnat6,
    make_tun6,
)
from tests.unit.test_engine_nat64 import make_nat64

RIP6 = RIPS6[2]  # rr's first choice


@pytest.fixture
def fp(request):
    prog = request.getfixturevalue("fast")  # loaded once for the module
    prog.events.read()
    yield prog
    prog.flows.clear()
    prog.events.read()


def entry_state(fp, f: FlowEntry) -> int:
    """The tcp_state of the entry as the kernel holds it."""
    names = [name for name, _, _ in VALUE_FIELDS]
    return dict(zip(names, VALUE.unpack(fp.flows.lookup(f.pack_key())), strict=True))["tcp_state"]


def the_conn(engine: Engine) -> Conn:
    (conn,) = engine.conns.conns()
    return conn


def offload(fp, conn: Conn) -> list[FlowEntry]:
    """The connection's recipes into the map, as FlowOffload writes them (state and counters)."""
    written = []
    for f in (conn.in_flow, conn.out_flow):
        if f is not None and f.offloadable:
            f.tcp_state = conn.state if conn.proto == 6 else 0
            f.packets = f.bytes = f.last_seen_ns = 0
            fp.flows.put(f)
            written.append(f)
    return written


def same_as_engine(fp, engine: Engine, pkt: Ether, ifindex: int, now: float) -> Ether:
    """The frame through the engine and through the program: redirected, byte for byte the engine's."""
    (out_if, out), = engine.process(frame(pkt), ifindex, now)
    expect = bytes(out)[vnet.VNET_HDR_LEN:]
    hits = fp.counters.read()["hit"]
    verdict, got = run(fp, pkt)
    assert verdict == TC_ACT_REDIRECT and fp.counters.read()["hit"] == hits + 1
    sent = Ether(got)
    assert got == expect, f"kernel:\n{sent.show(dump=True)}\nengine:\n{Ether(expect).show(dump=True)}"
    return sent


def established_nat(fp, proto: int = 6) -> Engine:
    """NAT66: the handshake (or the first datagram) through the engine, the recipes in the map."""
    if proto == 17:
        engine = make_engine6(proto=17, vport=53, rport=5353)
        engine.process(frame(from_client(UDP(sport=50000, dport=53) / b"q")), 1, 0.0)
        engine.process(frame(from_rs(RIP6, UDP(sport=5353, dport=50000) / b"a")), 2, 0.1)  # its hop is known
    else:
        engine = make_engine6()
        engine.process(frame(from_client(TCP(sport=40000, dport=80, flags="S", seq=999))), 1, 0.0)
        engine.process(frame(from_rs(RIP6, TCP(sport=8080, dport=40000, flags="SA", seq=4999, ack=1000))), 2, 0.1)
        engine.process(frame(from_client(TCP(sport=40000, dport=80, flags="A", seq=1000, ack=5000))), 1, 0.2)
        assert the_conn(engine).state == tcpstate.ESTABLISHED
    assert len(offload(fp, the_conn(engine))) == 2
    return engine


# -- NAT66 ------------------------------------------------------------------------------------------

def test_nat66_tcp_both_directions_as_the_engine(fp):
    engine = established_nat(fp)
    req = same_as_engine(fp, engine, from_client(TCP(sport=40000, dport=80, flags="PA", seq=1000, ack=5000)
                                                 / b"GET /", hlim=64), 1, 1.0)
    assert (req.src, req.dst) == (DIP_MAC, RS_MAC[RIP6])
    assert (req[IPv6].src, req[IPv6].dst, req[IPv6].hlim) == (CLIENT6, RIP6, 63)
    assert (req[TCP].sport, req[TCP].dport, req[TCP].seq, bytes(req[TCP].payload)) == (40000, 8080, 1000, b"GET /")
    assert checksums_valid(req)
    rep = same_as_engine(fp, engine, from_rs(RIP6, TCP(sport=8080, dport=40000, flags="PA", seq=5000, ack=1005)
                                             / b"200 OK", hlim=7), 2, 1.1)
    assert (rep.src, rep.dst) == (VIP_MAC, CLIENT_MAC)
    assert (rep[IPv6].src, rep[IPv6].dst, rep[IPv6].hlim) == (VIP6, CLIENT6, 6)
    assert (rep[TCP].sport, rep[TCP].dport) == (80, 40000) and checksums_valid(rep)


def test_nat66_udp_both_directions_as_the_engine(fp):
    engine = established_nat(fp, proto=17)
    req = same_as_engine(fp, engine, from_client(UDP(sport=50000, dport=53) / b"query"), 1, 1.0)
    assert (req[IPv6].dst, req[UDP].dport, bytes(req[UDP].payload)) == (RIP6, 5353, b"query") and checksums_valid(req)
    rep = same_as_engine(fp, engine, from_rs(RIP6, UDP(sport=5353, dport=50000) / b"answer"), 2, 1.1)
    assert (rep[IPv6].src, rep[UDP].sport, rep[IPv6].dst, rep[UDP].dport) == (VIP6, 53, CLIENT6, 50000)
    assert checksums_valid(rep)


def test_nat66_udp_checksum_that_comes_out_zero_is_sent_as_ffff(fp):
    engine = established_nat(fp, proto=17)
    # A payload chosen so that the rewritten datagram's checksum is 0: both must send 0xFFFF.
    base = from_client(UDP(sport=50000, dport=53) / b"\0\0")
    out = Ether(bytes(engine.process(frame(base), 1, 0.5)[0][1])[vnet.VNET_HDR_LEN:])
    filler = out[UDP].chksum.to_bytes(2, "big")  # adding ~sum makes the sum all ones: checksum 0
    req = same_as_engine(fp, engine, from_client(UDP(sport=50000, dport=53) / filler), 1, 1.0)
    assert req[UDP].chksum == 0xFFFF and checksums_valid(req)


def test_nat66_hits_count_packets_bytes(fp):
    engine = established_nat(fp)
    inbound = the_conn(engine).in_flow
    for size in (10, 1000):
        same_as_engine(fp, engine, from_client(TCP(sport=40000, dport=80, flags="A") / (b"x" * size)), 1, 1.0)
    assert fp.flows.refresh(inbound) and (inbound.packets, inbound.bytes) == (2, 2 * 60 + 10 + 1000)


# -- DR over IPv6 -----------------------------------------------------------------------------------

@pytest.mark.parametrize("proto", [6, 17])
def test_dr6_changes_only_macs_and_hop_limit_as_the_engine(fp, proto):
    engine = make_engine6(method=Method.ROUTE, proto=proto)
    first = TCP(sport=40000, dport=80, flags="S") if proto == 6 else UDP(sport=40000, dport=80)
    engine.process(frame(from_client(first)), 1, 0.0)
    if proto == 6:
        engine.process(frame(from_client(TCP(sport=40000, dport=80, flags="A"))), 1, 0.1)
    (inbound,) = offload(fp, the_conn(engine))
    l4 = TCP(sport=40000, dport=80, flags="PA") if proto == 6 else UDP(sport=40000, dport=80)
    sent = from_client(l4 / b"payload", hlim=2)
    out = same_as_engine(fp, engine, sent, 1, 1.0)
    assert (out.src, out.dst, out[IPv6].hlim) == (DIP_MAC, RS_MAC[RIP6], 1)
    assert bytes(out[IPv6])[:7] == bytes(sent[IPv6])[:7] and bytes(out[IPv6])[8:] == bytes(sent[IPv6])[8:]
    assert inbound.method == Method.ROUTE and checksums_valid(out)


# -- TUN over IPv6 ----------------------------------------------------------------------------------

def established_tun(fp, tun_type: str = "ipip") -> Engine:
    engine = make_tun6(tun_type=tun_type)
    engine.process(frame(from_client(TCP(sport=40000, dport=80, flags="S"))), 1, 0.0)
    engine.process(frame(from_client(TCP(sport=40000, dport=80, flags="A"))), 1, 0.1)
    offload(fp, the_conn(engine))
    return engine


@pytest.mark.parametrize("tclass", [0x00, 0xB8, 0x03])
def test_tun6_ipv6_in_ipv6_as_the_engine(fp, tclass):
    engine = established_tun(fp)
    sent = from_client(TCP(sport=40000, dport=80, flags="PA", seq=7) / b"data", hlim=30)
    sent[IPv6].tc = tclass
    sent[IPv6].fl = 0x12345
    out = same_as_engine(fp, engine, sent, 1, 1.0)
    outer = out[IPv6]
    assert (out.src, out.dst) == (DIP_MAC, RS_MAC[RIP6])
    assert (outer.src, outer.dst, outer.nh, outer.hlim, outer.fl) == (DIP6, RIP6, 41, 29, 0)
    assert outer.tc == (tclass if tclass & 3 != 3 else tclass & ~1)  # CE becomes ECT(0) outside
    assert outer.plen == len(bytes(sent[IPv6]))
    inner = IPv6(bytes(outer.payload))
    expect = sent[IPv6].copy()
    expect.hlim = 29
    assert bytes(inner) == bytes(expect)


def test_tun6_gre_as_the_engine(fp):
    engine = established_tun(fp, "gre")
    sent = from_client(TCP(sport=40000, dport=80, flags="A") / b"hi", hlim=20)
    out = same_as_engine(fp, engine, sent, 1, 1.0)
    assert (out[IPv6].nh, out[IPv6].hlim, out[GRE].proto, out[GRE].chksum_present) == (47, 19, 0x86DD, 0)
    assert out[IPv6].plen == 4 + len(bytes(sent[IPv6]))


def test_tun6_too_big_for_the_tunnel_is_punted(fp):
    engine = make_tun6(rs_mtu=1300)
    engine.process(frame(from_client(TCP(sport=40000, dport=80, flags="S"))), 1, 0.0)
    engine.process(frame(from_client(TCP(sport=40000, dport=80, flags="A"))), 1, 0.1)
    offload(fp, the_conn(engine))
    punted(fp, from_client(TCP(sport=40000, dport=80, flags="A") / (b"z" * 1201)), "punt_mtu")  # 1261 + 40
    assert run(fp, from_client(TCP(sport=40000, dport=80, flags="A") / (b"z" * 1200)))[0] == TC_ACT_REDIRECT


def test_a_tunnel_recipe_without_its_source_is_punted(fp):
    engine = established_tun(fp)
    f = the_conn(engine).in_flow
    f.outer_src = b""  # as the recipe would be before the engine knew the egress link's address
    fp.flows.put(f)
    punted(fp, from_client(TCP(sport=40000, dport=80, flags="A")), "punt_unsupported")


@pytest.mark.parametrize("tun_type,flags", [("gue", ""), ("gre", "csum")])
def test_tunnels_with_a_checksum_over_the_packet_stay_in_the_engine(fp, tun_type, flags):
    engine = make_tun6(tun_type=tun_type)
    for dest in engine.table.find(6, pack_ip(VIP6), 80).dests:
        dest.tun_port, dest.tun_flags = 6080, flags
    engine.process(frame(from_client(TCP(sport=40000, dport=80, flags="S"))), 1, 0.0)
    f = the_conn(engine).in_flow
    assert f.flags & F_ENGINE_ONLY and not offload(fp, the_conn(engine))
    fp.flows.put(f)
    punted(fp, from_client(TCP(sport=40000, dport=80, flags="A")), "punt_engine_only")
    f.flags &= ~F_ENGINE_ONLY  # and were one written without the flag, the program would still refuse it
    fp.flows.put(f)
    punted(fp, from_client(TCP(sport=40000, dport=80, flags="A")), "punt_unsupported")


# -- FULLNAT over IPv6 ------------------------------------------------------------------------------

def test_fullnat6_after_toa_both_directions_as_the_engine(fp):
    engine = make_fullnat6()
    (_, syn), = engine.process(frame(from_client(TCP(sport=40000, dport=80, flags="S", seq=999))), 1, 0.0)
    lport = Ether(bytes(syn)[vnet.VNET_HDR_LEN:])[TCP].sport
    synack = from_rs(RIP6, TCP(sport=8080, dport=lport, flags="SA", seq=4999, ack=1000), dst=LIP6)
    engine.process(frame(synack), 2, 0.1)
    conn = the_conn(engine)
    assert conn.in_flow.flags & F_ENGINE_ONLY  # TOA not yet sent: the engine's
    engine.process(frame(from_client(TCP(sport=40000, dport=80, flags="A", seq=1000, ack=5000))), 1, 0.2)
    assert len(offload(fp, conn)) == 2  # TOA went with that ACK
    req = same_as_engine(fp, engine, from_client(TCP(sport=40000, dport=80, flags="PA", seq=1000, ack=5000)
                                                 / b"GET /"), 1, 1.0)
    assert (req[IPv6].src, req[IPv6].dst, req[TCP].sport, req[TCP].dport) == (LIP6, RIP6, lport, 8080)
    assert not [o for o in req[TCP].options if o[0] == 254] and checksums_valid(req)
    rep = same_as_engine(fp, engine, from_rs(RIP6, TCP(sport=8080, dport=lport, flags="A", seq=5000, ack=1005)
                                             / b"200 OK", dst=LIP6), 2, 1.1)
    assert (rep[IPv6].src, rep[IPv6].dst, rep[TCP].sport, rep[TCP].dport) == (VIP6, CLIENT6, 80, 40000)
    assert checksums_valid(rep)


def test_fullnat6_udp_as_the_engine(fp):
    engine = make_fullnat6(proto=17, vport=53, rport=5353)
    (_, first), = engine.process(frame(from_client(UDP(sport=50000, dport=53) / b"q")), 1, 0.0)
    lport = Ether(bytes(first)[vnet.VNET_HDR_LEN:])[UDP].sport
    engine.process(frame(from_rs(RIP6, UDP(sport=5353, dport=lport) / b"a", dst=LIP6)), 2, 0.1)
    assert len(offload(fp, the_conn(engine))) == 2
    req = same_as_engine(fp, engine, from_client(UDP(sport=50000, dport=53) / b"query"), 1, 1.0)
    assert (req[IPv6].src, req[UDP].sport, req[IPv6].dst) == (LIP6, lport, RIP6) and checksums_valid(req)
    rep = same_as_engine(fp, engine, from_rs(RIP6, UDP(sport=5353, dport=lport) / b"answer", dst=LIP6), 2, 1.1)
    assert (rep[IPv6].src, rep[IPv6].dst, rep[UDP].dport) == (VIP6, CLIENT6, 50000) and checksums_valid(rep)


def test_fullnat6_under_the_proxy_protocol_stays_in_the_engine(fp):
    engine = make_fullnat6(proxy="v2")
    engine.process(frame(from_client(TCP(sport=40000, dport=80, flags="S", seq=999))), 1, 0.0)
    conn = the_conn(engine)
    assert conn.in_flow.flags & F_ENGINE_ONLY and conn.out_flow.flags & F_ENGINE_ONLY


# -- TCP state in the kernel ------------------------------------------------------------------------

def test_nat66_client_fin_is_forwarded_reported_and_the_reply_entry_follows(fp):
    engine = established_nat(fp)
    conn = the_conn(engine)
    fin = from_client(TCP(sport=40000, dport=80, flags="FA", seq=1000, ack=5000))
    out = same_as_engine(fp, engine, fin, 1, 1.0)
    assert out[TCP].flags == "FA" and checksums_valid(out)
    (ev,) = fp.events.read()
    assert ev.key == conn.in_flow.key and ev.proto == 6 and ev.direction == DIR_IN
    assert (ev.old_state, ev.new_state) == (tcpstate.ESTABLISHED, conn.state)  # the engine's own transition
    assert entry_state(fp, conn.out_flow) == conn.state  # the reply entry (keyed by the IPv6 reply tuple) follows
    rst = from_rs(RIP6, TCP(sport=8080, dport=40000, flags="R", seq=5000))
    same_as_engine(fp, engine, rst, 2, 1.1)
    ev, retired = fp.events.read()
    assert ev.direction == DIR_OUT and ev.new_state == conn.state == tcpstate.CLOSE
    # The RST ends it: the program takes both entries out and reports their counts.
    assert isinstance(retired, RetiredEvent) and retired.key == conn.out_flow.key
    assert retired.deleted == 1 << DIR_IN | 1 << DIR_OUT and retired.counts[DIR_OUT][0] == 1
    assert fp.flows.lookup(conn.in_flow.pack_key()) is None and fp.flows.lookup(conn.out_flow.pack_key()) is None


# -- punts: the frame goes on unchanged -------------------------------------------------------------

def data(**kw) -> Ether:
    return from_client(TCP(sport=40000, dport=80, flags="A") / (b"x" * 100), **kw)


def test_syn_is_punted(fp):
    established_nat(fp)
    punted(fp, from_client(TCP(sport=40000, dport=80, flags="S")), "punt_tcp_flags")


def test_a_syn_ack_goes_by_its_entry(fp):  # (the recipes go to the kernel with the SYN: test_bpf_prog.py)
    established_nat(fp)
    verdict, out = run(fp, from_rs(RIP6, TCP(sport=8080, dport=40000, flags="SA", seq=4999, ack=1000)))
    assert verdict == TC_ACT_REDIRECT
    pkt = Ether(out)
    assert pkt[IPv6].src == VIP6 and pkt[IPv6].dst == CLIENT6 and pkt[TCP].sport == 80 and pkt[TCP].flags == "SA"


@pytest.mark.parametrize("ext,reason", [
    (IPv6ExtHdrFragment(offset=0, m=1, id=5), "punt_fragment"),
    (IPv6ExtHdrFragment(offset=8, m=0, id=5), "punt_fragment"),
    (IPv6ExtHdrHopByHop(), "punt_ext_header"),
    (IPv6ExtHdrDestOpt(), "punt_ext_header"),
], ids=["first-fragment", "later-fragment", "hop-by-hop", "destination-options"])
def test_extension_headers_and_fragments_are_punted(fp, ext, reason):
    established_nat(fp)
    punted(fp, from_client(TCP(sport=40000, dport=80, flags="A") / b"x", ext=ext), reason)


def test_hop_limit_one_is_punted(fp):
    established_nat(fp)
    punted(fp, data(hlim=1), "punt_ttl")


def test_too_big_for_the_egress_mtu_is_punted(fp):
    engine = make_engine6(rs_mtu=139)
    engine.process(frame(from_client(TCP(sport=40000, dport=80, flags="S"))), 1, 0.0)
    engine.process(frame(from_rs(RIP6, TCP(sport=8080, dport=40000, flags="SA"))), 2, 0.1)
    engine.process(frame(from_client(TCP(sport=40000, dport=80, flags="A"))), 1, 0.2)
    offload(fp, the_conn(engine))
    punted(fp, data(), "punt_mtu")  # 40 + 20 + 100 = 160 > 139
    punted(fp, from_client(TCP(sport=40000, dport=80, flags="A") / (b"x" * 80)), "punt_mtu")  # 140
    assert run(fp, from_client(TCP(sport=40000, dport=80, flags="A") / (b"x" * 79)))[0] == TC_ACT_REDIRECT


def test_gso_segments_are_held_to_the_mtu(fp):
    established_nat(fp)
    big = from_client(TCP(sport=40000, dport=80, flags="A") / (bytes(range(256)) * 8))
    assert run(fp, big, gso_size=1440)[0] == TC_ACT_REDIRECT  # 40 + 20 + 1440 = 1500
    punted(fp, big, "punt_mtu", gso_size=1441)


def test_udp_without_a_checksum_is_punted(fp):
    established_nat(fp, proto=17)
    pkt = from_client(UDP(sport=50000, dport=53, chksum=0) / b"query")
    punted(fp, pkt, "punt_bad_header")


def test_payload_length_beyond_the_frame_is_punted(fp):
    established_nat(fp)
    raw = bytes(data())
    punted(fp, Ether(raw[:-10]), "punt_bad_header")


def test_icmpv6_goes_on_unchanged(fp):
    established_nat(fp)
    punted(fp, from_client(ICMPv6EchoRequest(data=b"ping")), "pass_other")


def test_engine_only_and_miss(fp):
    engine = make_engine6()
    engine.process(frame(from_client(TCP(sport=40000, dport=80, flags="S"))), 1, 0.0)
    conn = the_conn(engine)
    conn.in_flow.flags |= F_ENGINE_ONLY
    fp.flows.put(conn.in_flow)
    punted(fp, data(), "punt_engine_only")
    punted(fp, from_client(TCP(sport=40001, dport=80, flags="A")), "miss")


@pytest.mark.parametrize("proto", [6, 17])
def test_nat64_recipes_stay_in_the_engine(fp, proto):
    engine = make_nat64(proto=proto, vport=80, rport=8080)
    first = TCP(sport=40000, dport=80, flags="S") if proto == 6 else UDP(sport=40000, dport=80)
    engine.process(frame(from_client(first)), 1, 0.0)
    conn = the_conn(engine)
    assert len(conn.daddr) == 4 and conn.in_flow.flags & F_ENGINE_ONLY and conn.out_flow.flags & F_ENGINE_ONLY
    conn.in_flow.flags &= ~F_ENGINE_ONLY  # were it written without the flag, the program would refuse it
    fp.flows.put(conn.in_flow)
    l4 = TCP(sport=40000, dport=80, flags="A") if proto == 6 else UDP(sport=40000, dport=80)
    punted(fp, from_client(l4 / b"x"), "punt_unsupported")
