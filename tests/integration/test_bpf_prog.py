"""The fast path program on crafted frames (BPF_PROG_TEST_RUN), decoded by scapy.

Each method and direction against the expectations of the engine's unit tests (test_engine_nat,
_fullnat, _dr, _tun), and every punt rule: the frame comes back unchanged with TC_ACT_OK. Loading
the program is the verifier test. Needs root (BPF), so it lives with the integration tests.
"""

from __future__ import annotations

import struct
import time

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import ICMPv6EchoRequest, IPv6
from scapy.layers.l2 import ARP, GRE, Dot1Q, Ether

from pylvs.datapath.bpf.loader import FastPath
from pylvs.datapath.bpf.maps import COUNTERS
from pylvs.engine.flow import F_ENCAP_CSUM, F_ENGINE_ONLY
from tests.integration.bpf_flows import (
    DIP,
    GUE_PORT,
    LIP,
    RIP,
    TC_ACT_OK,
    TC_ACT_REDIRECT,
    dr,
    fullnat,
    nat,
    tun,
)
from tests.unit.director import CLIENT, CLIENT_MAC, DIP_MAC, VIP, VIP_MAC, checksums_valid, from_client, from_rs, rs_mac
from tests.unit.test_engine_tun import checksums_valid as all_checksums_valid
from tests.unit.test_engine_tun import inner_of

SKB_GSO_SIZE = 176  # offsetof(struct __sk_buff, gso_size): uapi, fixed once released
SKB_CTX_SIZE = 192  # sizeof(struct __sk_buff) in kernel 6.x


@pytest.fixture(scope="module")
def fast():
    with FastPath(pin_root=None, max_flows=1024) as f:
        yield f


@pytest.fixture
def fp(fast):
    yield fast
    fast.flows.clear()


def run(fp, pkt, gso_size: int = 0) -> tuple[int, bytes]:
    ctx = None
    if gso_size:
        ctx = bytearray(SKB_CTX_SIZE)
        struct.pack_into("=I", ctx, SKB_GSO_SIZE, gso_size)
        ctx = bytes(ctx)
    verdict, frame, _ = fp.test_run(bytes(pkt), ctx)
    return verdict, frame


def forwarded(fp, pkt, *entries, gso_size: int = 0) -> Ether:
    """Put the entries, run the frame; it must be redirected. The frame as it left, decoded."""
    for e in entries:
        fp.flows.put(e)
    before = fp.counters.read()
    verdict, out = run(fp, pkt, gso_size)
    assert verdict == TC_ACT_REDIRECT
    assert fp.counters.read()["hit"] == before["hit"] + 1
    return Ether(out)


def test_the_verifier_accepts_the_program(fast):
    assert fast.prog_fd > 0
    assert set(fast.counters.read()) == set(COUNTERS)


# -- NAT ---------------------------------------------------------------------------------------

def test_nat_tcp_request_is_dnated_to_rip_and_rport(fp):
    inbound, _ = nat()
    pkt = forwarded(fp, from_client(TCP(sport=40000, dport=80, flags="A", seq=1000, ack=77) / b"GET /"), inbound)
    assert pkt.src == DIP_MAC and pkt.dst == rs_mac(RIP)
    assert pkt[IP].src == CLIENT and pkt[IP].dst == RIP
    assert pkt[TCP].sport == 40000 and pkt[TCP].dport == 8080
    assert pkt[TCP].seq == 1000 and pkt[TCP].ack == 77 and bytes(pkt[TCP].payload) == b"GET /"
    assert pkt[IP].ttl == 63
    assert checksums_valid(pkt)


def test_nat_tcp_reply_is_snated_to_vip(fp):
    _, outbound = nat()
    pkt = forwarded(fp, from_rs(RIP, TCP(sport=8080, dport=40000, flags="PA") / b"200 OK"), outbound)
    assert pkt.src == VIP_MAC and pkt.dst == CLIENT_MAC
    assert pkt[IP].src == VIP and pkt[IP].dst == CLIENT
    assert pkt[TCP].sport == 80 and pkt[TCP].dport == 40000
    assert pkt[IP].ttl == 63
    assert checksums_valid(pkt)


@pytest.mark.parametrize("with_checksum", [True, False])
def test_nat_udp_both_directions(fp, with_checksum):
    inbound, outbound = nat(proto=17, cport=50000, vport=53, rport=5353)
    query = from_client(UDP(sport=50000, dport=53) / b"query")
    if not with_checksum:
        query[UDP].chksum = 0
    req = forwarded(fp, query, inbound, outbound)
    assert req[IP].dst == RIP and req[UDP].dport == 5353 and bytes(req[UDP].payload) == b"query"
    if with_checksum:
        assert checksums_valid(req)
    else:
        assert req[UDP].chksum == 0 and checksums_valid(req)  # "no checksum" stays so
    rep = forwarded(fp, from_rs(RIP, UDP(sport=5353, dport=50000) / b"answer"))
    assert rep[IP].src == VIP and rep[UDP].sport == 53 and rep[IP].dst == CLIENT and rep[UDP].dport == 50000
    assert rep.dst == CLIENT_MAC and checksums_valid(rep)


# -- FULLNAT -----------------------------------------------------------------------------------

@pytest.mark.parametrize("proto", [6, 17])
def test_fullnat_both_directions(fp, proto):
    inbound, outbound = fullnat(proto=proto)
    l4 = TCP(sport=40000, dport=80, flags="A", seq=7) if proto == 6 else UDP(sport=40000, dport=80)
    req = forwarded(fp, from_client(l4 / b"hello"), inbound, outbound)
    assert req.src == DIP_MAC and req.dst == rs_mac(RIP)
    assert req[IP].src == LIP and req[IP].dst == RIP
    assert req[IP].payload.sport == 5001 and req[IP].payload.dport == 8080
    assert req[IP].ttl == 63 and checksums_valid(req)
    l4 = TCP(sport=8080, dport=5001, flags="A") if proto == 6 else UDP(sport=8080, dport=5001)
    rep = forwarded(fp, from_rs(RIP, l4 / b"world", dst=LIP))
    assert rep.dst == CLIENT_MAC and rep.src == VIP_MAC
    assert rep[IP].src == VIP and rep[IP].dst == CLIENT
    assert rep[IP].payload.sport == 80 and rep[IP].payload.dport == 40000
    assert rep[IP].ttl == 63 and checksums_valid(rep)


# -- DR ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("proto", [6, 17])
def test_dr_changes_only_macs_ttl_and_ip_checksum(fp, proto):
    l4 = TCP(sport=40000, dport=80, flags="A") if proto == 6 else UDP(sport=40000, dport=80)
    sent = from_client(l4 / b"payload")
    sent = Ether(bytes(sent))
    pkt = forwarded(fp, sent, dr(proto))
    assert pkt.src == DIP_MAC and pkt.dst == rs_mac(RIP)
    assert pkt[IP].ttl == 63 and checksums_valid(pkt)
    before, after = bytes(sent[IP]), bytes(pkt[IP])
    assert before[:8] == after[:8] and before[9:10] == after[9:10] and before[12:] == after[12:]


# -- TUN ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind,proto", [("ipip", 4), ("gue", 17), ("gre", 47)])
def test_tun_request_is_encapsulated_dip_to_rip(fp, kind, proto):
    original = Ether(bytes(from_client(TCP(sport=40000, dport=80, flags="A", seq=1000) / b"data", ttl=64)))
    pkt = forwarded(fp, original, tun(kind))
    assert pkt.src == DIP_MAC and pkt.dst == rs_mac(RIP)
    outer = pkt[IP]
    assert (outer.src, outer.dst, outer.proto) == (DIP, RIP, proto)
    assert outer.ttl == 63 and outer.ihl == 5 and outer.flags == 0 and outer.frag == 0
    assert outer.len == len(bytes(outer))
    inner = inner_of(pkt)
    assert inner.src == CLIENT and inner.dst == VIP and inner.ttl == 63
    sent = original[IP]
    assert bytes(inner[TCP]) == bytes(sent[TCP])  # the client's segment, byte for byte
    assert bytes(inner)[:8] == bytes(sent)[:8] and bytes(inner)[12:20] == bytes(sent)[12:20]
    assert all_checksums_valid(pkt) and all_checksums_valid(inner)
    if kind == "gue":
        assert pkt[UDP].dport == GUE_PORT and pkt[UDP].sport == 40001 and pkt[UDP].chksum == 0
        assert pkt[UDP].len == 8 + 4 + len(bytes(inner))
    if kind == "gre":
        gre = pkt[GRE]
        assert gre.proto == 0x0800 and not (gre.chksum_present or gre.key_present or gre.seqnum_present)
        assert len(bytes(gre)) - len(bytes(gre.payload)) == 4


@pytest.mark.parametrize("tos,outer_tos", [(0x00, 0x00), (0xB8, 0xB8), (0xB9, 0xB9), (0xBA, 0xBA), (0xBB, 0xBA)])
def test_tun_tos_is_copied_and_ce_becomes_ect0(fp, tos, outer_tos):
    pkt = from_client(TCP(sport=40000, dport=80, flags="A"))
    pkt[IP].tos = tos
    out = forwarded(fp, pkt, tun())
    assert out[IP].tos == outer_tos and inner_of(out).tos == tos


def test_tun_df_is_copied_with_outer_id_zero_and_random_ids_without_df(fp):
    fp.flows.put(tun())
    with_df = from_client(TCP(sport=40000, dport=80, flags="A"), ttl=20)
    with_df[IP].flags = "DF"
    a = forwarded(fp, with_df)
    assert a[IP].flags == "DF" and a[IP].ttl == 19 and all_checksums_valid(a)
    assert a[IP].id == 0  # as the kernel's tunnels (and lvsd's Python path) send DF packets
    without = from_client(TCP(sport=40000, dport=80, flags="A"), ttl=20)
    ids = {forwarded(fp, without)[IP].id for _ in range(3)}
    assert len(ids) > 1


def test_tun_udp_service(fp):
    out = forwarded(fp, from_client(UDP(sport=40000, dport=53) / b"q"), tun("ipip", proto=17, vport=53))
    inner = inner_of(out)
    assert inner[UDP].dport == 53 and bytes(inner[UDP].payload) == b"q" and all_checksums_valid(out)


# -- GSO super-frames: the MTU applies to the segments -----------------------------------------

def gso_frame() -> Ether:
    return from_client(TCP(sport=40000, dport=80, flags="A") / (bytes(range(256)) * 8))  # 2048-byte payload


def test_gso_frame_within_the_mtu_per_segment_is_forwarded(fp):
    inbound, _ = nat()
    pkt = forwarded(fp, gso_frame(), inbound, gso_size=1000)
    assert pkt[IP].len == 20 + 20 + 2048 and pkt[TCP].dport == 8080 and checksums_valid(pkt)
    out = forwarded(fp, gso_frame(), dr(), gso_size=1000)
    assert out[IP].len == 20 + 20 + 2048 and out[IP].ttl == 63 and checksums_valid(out)


def test_tunnel_room_refused_by_the_kernel_leaves_the_frame_unchanged(fp):
    # A test run cannot mark the frame as TCP GSO, and bpf_skb_adjust_room grows only TCP and
    # UDP_L4 GSO frames: the refusal must leave the frame as it was, for the engine.
    punted(fp, gso_frame(), "punt_no_room", tun("gre"), gso_size=1000)


@pytest.mark.parametrize("gso_size,entry", [(1461, "nat"), (1437, "gue")])
def test_gso_segments_larger_than_the_mtu_are_punted(fp, gso_size, entry):
    e = nat()[0] if entry == "nat" else tun("gue")
    punted(fp, gso_frame(), "punt_mtu", e, gso_size=gso_size)


# -- punts: the frame goes on unchanged --------------------------------------------------------

def punted(fp, pkt, reason: str, *entries, gso_size: int = 0) -> None:
    for e in entries:
        fp.flows.put(e)
    raw = bytes(pkt)
    before = fp.counters.read()
    verdict, out = run(fp, raw, gso_size)
    after = fp.counters.read()
    assert verdict == TC_ACT_OK
    assert out == raw
    assert {k: after[k] - before[k] for k in after if after[k] != before[k]} == {reason: 1}
    for e in entries:
        assert fp.flows.refresh(e) and e.packets == 0


def ack(**ip_fields) -> Ether:
    pkt = from_client(TCP(sport=40000, dport=80, flags="A") / (b"x" * 100))
    for k, v in ip_fields.items():
        setattr(pkt[IP], k, v)
    return pkt


@pytest.mark.parametrize("flags", ["S", "SF", "SR"])
def test_syn_is_punted(fp, flags):  # (FIN and RST: test_bpf_tcp_state.py)
    punted(fp, from_client(TCP(sport=40000, dport=80, flags=flags)), "punt_tcp_flags", nat()[0])


def test_a_syn_ack_goes_by_its_entry(fp):
    """The recipes of a connection the engine schedules go to the kernel with its SYN: the real server's
    answer is forwarded by the reply entry like any reply, with no program-side scheduling on."""
    _, outbound = nat()
    pkt = forwarded(fp, from_rs(RIP, TCP(sport=8080, dport=40000, flags="SA", seq=9000, ack=5001)), outbound)
    assert pkt[IP].src == VIP and pkt[IP].dst == CLIENT and pkt[TCP].sport == 80 and pkt[TCP].flags == "SA"
    assert checksums_valid(pkt)


@pytest.mark.parametrize("fields", [{"flags": "MF"}, {"frag": 8}])
def test_fragments_are_punted(fp, fields):
    punted(fp, ack(**fields), "punt_fragment", nat()[0])


def test_ip_options_are_punted(fp):
    punted(fp, ack(options=[b"\x94\x04\x00\x00"]), "punt_ip_options", nat()[0])  # router alert


def test_ttl_one_is_punted(fp):
    punted(fp, ack(ttl=1), "punt_ttl", dr())


@pytest.mark.parametrize("make,mtu", [(dr, 139), (tun, 159)])
def test_too_big_for_the_mtu_is_punted(fp, make, mtu):
    pkt = ack()  # 140 bytes of IP; the tunnel adds 20
    punted(fp, pkt, "punt_mtu", make(mtu=mtu))
    fp.flows.put(make(mtu=mtu + 1))
    assert run(fp, pkt)[0] == TC_ACT_REDIRECT  # one byte more room is enough


def test_engine_only_is_punted(fp):
    inbound, _ = nat()
    inbound.flags |= 0x0001
    assert inbound.flags & F_ENGINE_ONLY
    punted(fp, ack(), "punt_engine_only", inbound)


def test_miss_goes_on_unchanged(fp):
    fp.flows.put(nat(cport=40001)[0])
    punted(fp, ack(), "miss")


def test_bad_ip_checksum_is_punted(fp):
    pkt = Ether(bytes(ack()))
    pkt[IP].chksum ^= 0x0101
    punted(fp, pkt, "punt_bad_header", nat()[0])


def test_truncated_frame_is_punted(fp):
    raw = bytes(ack())
    pkt = Ether(raw[:-10])  # the IP total length says 10 bytes more than the frame holds
    punted(fp, pkt, "punt_bad_header", nat()[0])


@pytest.mark.parametrize("pkt", [
    Ether(src=CLIENT_MAC, dst=VIP_MAC) / ARP(psrc=CLIENT, pdst=VIP),
    from_client(ICMP(type=8) / b"ping"),
    Ether(src=CLIENT_MAC, dst=VIP_MAC) / IPv6(src="2001:db8::1", dst="2001:db8::2") / ICMPv6EchoRequest(),
    Ether(src=CLIENT_MAC, dst=VIP_MAC) / Dot1Q(vlan=7) / IP(src=CLIENT, dst=VIP) / TCP(sport=40000, dport=80),
], ids=["arp", "icmp", "icmpv6", "vlan"])
def test_other_frames_go_on_unchanged(fp, pkt):
    punted(fp, pkt, "pass_other", nat()[0])


def test_recipes_this_program_cannot_execute_are_punted(fp):
    punted(fp, ack(), "punt_unsupported", tun("gue", flags=F_ENCAP_CSUM))
    punted(fp, ack(), "punt_unsupported", tun("gre", flags=F_ENCAP_CSUM))
    shifted = fullnat()[0]
    shifted.seq_delta = 1000  # a FULLNAT connection after its client address header (TOA, PROXY)
    punted(fp, ack(), "punt_unsupported", shifted)
    fp.flows.clear()
    nat64 = nat()[0]
    nat64.addrs = bytes(16) + bytes(15) + b"\x01"  # an IPv6 rewrite of an IPv4 flow
    fp.flows.put(nat64)
    verdict, out = run(fp, ack())
    assert verdict == TC_ACT_OK and out == bytes(ack())


# -- the entry's counters ----------------------------------------------------------------------

def test_hits_count_packets_bytes_and_last_seen(fp):
    inbound, outbound = nat()
    fp.flows.put(inbound)
    fp.flows.put(outbound)
    start = time.monotonic_ns()
    for size in (10, 1000):
        assert run(fp, from_client(TCP(sport=40000, dport=80, flags="A") / (b"x" * size)))[0] == TC_ACT_REDIRECT
    end = time.monotonic_ns()
    assert fp.flows.refresh(inbound)
    assert (inbound.packets, inbound.bytes) == (2, 40 + 10 + 40 + 1000)
    assert start <= inbound.last_seen_ns <= end
    assert fp.flows.refresh(outbound) and outbound.packets == 0


def test_map_put_delete_and_iterate(fp):
    entries = [*nat(), *fullnat(cport=40002), dr(cport=40003)]
    for e in entries:
        fp.flows.put(e)
    keys = {k for k, _ in fp.flows.items()}
    assert keys == {e.pack_key() for e in entries}
    assert fp.flows.lookup(entries[0].pack_key()) == entries[0].pack_value()
    assert fp.flows.delete(entries[0]) and not fp.flows.delete(entries[0])
    assert not fp.flows.refresh(entries[0])
    assert len(fp.flows) == len(entries) - 1
    punted(fp, ack(), "miss")


def test_reading_the_map_out_spans_several_batches():
    """items() and len() read the map in batches of COUNT_BATCH (as lvsd does at restart): none lost or
    repeated across a batch's end. (A map ten times the size: the LRU evicts nothing yet.)"""
    from pylvs.datapath.bpf.maps import COUNT_BATCH

    with FastPath(pin_root=None, max_flows=16 * COUNT_BATCH) as fp:
        written = {}
        for i in range(COUNT_BATCH + COUNT_BATCH // 2):
            inbound, _ = nat(cport=1024 + i)
            inbound.packets = i
            fp.flows.put(inbound)
            written[inbound.pack_key()] = inbound.pack_value()
        assert dict(fp.flows.items()) == written
        assert len(fp.flows) == len(written)
