"""lvs-rs decap on link-level frames: the offload state (virtio_net_hdr) of a tunnelled packet moved
to its inner packet, the outer checks, and the socket filter; frames built with scapy.

A partial checksum is checked the way the receiving kernel would finish it: the one's-complement
sum from csum_start to the end, stored at csum_start + csum_offset; scapy then says if it is right.
"""

from __future__ import annotations

import socket
import struct

import pytest
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import GRE, Ether

from pylvs.packet import checksum, vnet
from pylvs.rs import capture, decap, offload

VIP = "192.0.2.100"
RIP = "198.51.100.11"
VIPS = {socket.inet_aton(VIP)}
LOCAL = {socket.inet_aton(RIP)}
GUE_PORT = 6080
GUE = b"\x00\x04\x00\x00"
OUTER = IP(src="192.0.2.1", dst=RIP, id=7)
L4_AT = {"ipip": 20, "gre": 24, "gue": 32}  # where the inner packet starts, after the outer IP header
PAYLOAD = bytes(range(256)) * 12


def partial(pkt: IP) -> bytes:
    """The packet as a stack with checksum offload leaves it: the L4 checksum field holds only the
    pseudo-header sum (not inverted)."""
    raw = bytearray(bytes(pkt))
    ihl = (raw[0] & 0x0F) * 4
    proto = raw[9]
    field = ihl + (offload.TCP_CHECK if proto == socket.IPPROTO_TCP else offload.UDP_CHECK)
    pseudo = checksum.pseudo_header_sum(bytes(raw[12:16]), bytes(raw[16:20]), proto, len(raw) - ihl)
    raw[field:field + 2] = struct.pack("!H", pseudo)
    return bytes(raw)


def finish(inner: bytes, header: bytes) -> bytes:
    """What the receiving kernel does with a NEEDS_CSUM packet."""
    flags, _, _, _, start, off = vnet.unpack(header)
    if not flags & vnet.F_NEEDS_CSUM:
        return inner
    raw = bytearray(inner)
    raw[start + off:start + off + 2] = struct.pack("!H", ~checksum.ones_sum(raw[start:]) & 0xFFFF)
    return bytes(raw)


def correct(pkt: bytes) -> bool:
    ip = IP(pkt)
    layer = ip[TCP] if TCP in ip else ip[UDP]
    got = layer.chksum
    del layer.chksum
    return IP(bytes(ip))[type(layer)].chksum == got


def tunnelled(kind: str, inner: bytes, outer: IP = OUTER) -> bytes:
    if kind == "ipip":
        return bytes(outer.copy() / IP(inner))
    if kind == "gre":
        return bytes(outer.copy() / GRE(proto=0x0800) / IP(inner))
    return bytes(outer.copy() / UDP(sport=40000, dport=GUE_PORT, chksum=0) / (GUE + inner))


def frame(kind: str, inner: bytes, hdr: bytes, outer: IP = OUTER) -> memoryview:
    return memoryview(hdr + bytes(Ether() / IP(tunnelled(kind, inner, outer))))


def kernel_hdr(kind: str, inner: bytes, gso_type: int = vnet.GSO_NONE, gso_size: int = 0) -> bytes:
    """The virtio_net_hdr AF_PACKET gives a partial (possibly GSO) tunnelled frame on Ethernet:
    csum_start counts from the Ethernet header."""
    tcp = inner[9] == socket.IPPROTO_TCP
    return vnet.pack(vnet.F_NEEDS_CSUM, gso_type, 0, gso_size, 14 + L4_AT[kind] + 20,
                     offload.TCP_CHECK if tcp else offload.UDP_CHECK)


def from_link(kind: str, f: memoryview, local=LOCAL):
    return decap.from_link(kind, f, capture.ARPHRD_ETHER, GUE_PORT, VIPS, local)


# -- the offload state, moved -----------------------------------------------------------------

@pytest.mark.parametrize("kind", decap.KINDS)
def test_a_partial_tcp_super_frame_keeps_its_gso_and_gets_its_checksum_start_moved(kind):
    inner = partial(IP(src="203.0.113.10", dst=VIP) / TCP(sport=40000, dport=80, flags="A") / PAYLOAD)
    assert not correct(inner)
    header, got, why = from_link(kind, frame(kind, inner, kernel_hdr(kind, inner, vnet.GSO_TCPV4, 1448)))
    assert why == "" and bytes(got) == inner
    assert vnet.unpack(header) == (vnet.F_NEEDS_CSUM, vnet.GSO_TCPV4, 40, 1448, 20, 16)
    assert correct(finish(bytes(got), header))


def test_ecn_on_a_super_frame_stays_and_timestamps_count_in_the_header_length():
    inner = partial(IP(src="203.0.113.10", dst=VIP) / TCP(dport=80, options=[("NOP", None), ("NOP", None),
                                                                              ("Timestamp", (1, 2))]) / PAYLOAD)
    hdr = kernel_hdr("ipip", inner, vnet.GSO_TCPV4 | vnet.GSO_ECN, 1436)
    header, _, _ = from_link("ipip", frame("ipip", inner, hdr))
    assert vnet.unpack(header)[:4] == (vnet.F_NEEDS_CSUM, vnet.GSO_TCPV4 | vnet.GSO_ECN, 52, 1436)


@pytest.mark.parametrize("kind", decap.KINDS)
def test_a_partial_udp_datagram_and_a_udp_gso_one(kind):
    inner = partial(IP(src="203.0.113.10", dst=VIP) / UDP(sport=5000, dport=53) / PAYLOAD)
    for gso, size in ((vnet.GSO_NONE, 0), (vnet.GSO_UDP_L4, 1000)):
        header, got, why = from_link(kind, frame(kind, inner, kernel_hdr(kind, inner, gso, size)))
        assert why == "" and vnet.unpack(header) == (vnet.F_NEEDS_CSUM, gso, 28, size, 20, 6)
        assert correct(finish(bytes(got), header))


def test_a_complete_checksum_is_left_to_the_receiving_stack_even_when_wrong():
    good = bytes(IP(src="203.0.113.10", dst=VIP) / TCP(dport=80) / b"x")
    bad = bytearray(good)
    bad[-1] ^= 1
    for inner in (good, bytes(bad)):
        header, got, why = from_link("ipip", frame("ipip", inner, vnet.EMPTY))
        assert (header, bytes(got), why) == (vnet.EMPTY, inner, "")  # no DATA_VALID: the stack checks
    assert not correct(bytes(bad))


def test_offload_states_that_cannot_be_carried_over_are_refused():
    inner = partial(IP(src="203.0.113.10", dst=VIP) / TCP(dport=80) / PAYLOAD)
    hdr = kernel_hdr("gre", inner)
    outer_sum = vnet.pack(vnet.F_NEEDS_CSUM, 0, 0, 0, 14 + 20, 4)  # the GRE header's own checksum
    assert from_link("gre", frame("gre", inner, outer_sum))[2] == "csum_outside_inner"
    udp_gso_on_tcp = vnet.pack(vnet.F_NEEDS_CSUM, vnet.GSO_UDP_L4, 0, 1000, *vnet.unpack(hdr)[4:])
    assert from_link("gre", frame("gre", inner, udp_gso_on_tcp))[2] == "gso_unsupported"
    no_size = vnet.pack(vnet.F_NEEDS_CSUM, vnet.GSO_TCPV4, 0, 0, *vnet.unpack(hdr)[4:])
    assert from_link("gre", frame("gre", inner, no_size))[2] == "gso_unsupported"
    gso_complete = vnet.pack(0, vnet.GSO_TCPV4, 0, 1448)
    assert from_link("gre", frame("gre", inner, gso_complete))[2] == "gso_without_csum"


# -- the outer packet, checked as the kernel would ---------------------------------------------

def test_outer_checks():
    inner = bytes(IP(src="203.0.113.10", dst=VIP) / TCP(dport=80))
    ok = frame("ipip", inner, vnet.EMPTY)
    assert from_link("ipip", ok)[2] == ""
    assert from_link("ipip", memoryview(bytes(ok) + bytes(20)))[1].tobytes() == inner  # Ethernet padding
    broken = bytearray(ok)
    broken[10 + 14 + 10] ^= 0xFF  # the outer header checksum
    assert from_link("ipip", memoryview(broken))[2] == "bad_outer"
    for flags, frag in (("MF", 0), (0, 100)):
        fragment = frame("ipip", inner, vnet.EMPTY, IP(src="192.0.2.1", dst=RIP, flags=flags, frag=frag))
        assert from_link("ipip", fragment)[2] == "fragment"
    assert from_link("gre", ok)[2] == "other_protocol"
    assert from_link("ipip", ok, local=set())[2] == "not_local"
    vlan = bytearray(ok)
    vlan[10 + 12:10 + 14] = b"\x81\x00"
    assert from_link("ipip", memoryview(vlan))[2] == "not_ours"
    other_vip = bytes(IP(src="203.0.113.10", dst="192.0.2.99") / TCP(dport=80))
    assert from_link("ipip", frame("ipip", other_vip, vnet.EMPTY))[2] == "not_vip"


def test_gue_port_and_outer_udp_checksum():
    inner = bytes(IP(src="203.0.113.10", dst=VIP) / TCP(dport=80))
    other_port = IP(tunnelled("gue", inner))
    other_port[UDP].dport = GUE_PORT + 1
    assert from_link("gue", memoryview(vnet.EMPTY + bytes(Ether() / other_port)))[2] == "other_port"
    summed = OUTER / UDP(sport=40000, dport=GUE_PORT) / (GUE + inner)  # scapy fills the UDP checksum
    good = memoryview(vnet.EMPTY + bytes(Ether() / summed))
    assert from_link("gue", good)[1].tobytes() == inner
    corrupt = bytearray(good)
    corrupt[-1] ^= 1
    assert from_link("gue", memoryview(corrupt))[2] == "bad_checksum"
    # A partial inner checksum never crossed a wire unchecked: the tunnel checksum is not verified.
    part = partial(IP(inner))
    with_sum = memoryview(kernel_hdr("gue", part) + bytes(Ether() / OUTER / UDP(sport=1, dport=GUE_PORT,
                                                                               chksum=0x1234) / (GUE + part)))
    assert from_link("gue", with_sum)[2] == ""


@pytest.mark.parametrize("data", [b"", bytes(10), bytes(10) + b"\x45", bytes(24), bytes(10) + bytes(Ether())[:20]])
def test_short_frames_never_raise(data):
    for kind in decap.KINDS:
        header, inner, why = from_link(kind, memoryview(data))
        assert header is None and inner is None and why


def test_links_without_a_header_and_loopback():
    inner = bytes(IP(src="203.0.113.10", dst=VIP) / TCP(dport=80))
    bare = memoryview(vnet.EMPTY + tunnelled("ipip", inner))
    assert decap.from_link("ipip", bare, capture.ARPHRD_NONE, 0, VIPS, LOCAL)[1].tobytes() == inner
    assert decap.from_link("ipip", bare, 0x999, 0, VIPS, LOCAL)[2] == "not_ours"


def test_local_addresses_are_read_again_at_most_once_a_second(monkeypatch):
    now = [100.0]
    reads = []
    monkeypatch.setattr(decap.net, "local_addresses", lambda: reads.append(1) or {RIP})
    local = decap.LocalAddresses(clock=lambda: now[0])
    assert socket.inet_aton(RIP) in local and len(reads) == 1
    assert socket.inet_aton("10.0.0.1") not in local and len(reads) == 1
    now[0] += 1.5
    assert socket.inet_aton("10.0.0.1") not in local and len(reads) == 2


# -- the link-level socket's filter --------------------------------------------------------------

def run_filter(program, packet: bytes, pkttype: int = capture.PACKET_HOST) -> int:
    """A classic BPF interpreter for the instructions tunnel_filter uses (loads relative to the IP header)."""
    net = capture.SKF_NET_OFF
    a = x = pc = 0
    while True:
        code, jt, jf, k = program[pc]
        pc += 1
        if code == capture.LD_W_ABS and k == capture.SKF_AD_PKTTYPE:
            a = pkttype
        elif code == capture.LD_B_ABS:
            a = packet[k - net]
        elif code == capture.LD_H_ABS:
            a = int.from_bytes(packet[k - net:k - net + 2], "big")
        elif code == capture.LDX_MSH:
            x = 4 * (packet[k - net] & 0x0F)
        elif code == capture.LD_H_IND:
            a = int.from_bytes(packet[x + k - net:x + k - net + 2], "big")
        elif code in (capture.JEQ_K, capture.JSET_K):
            pc += jt if (a == k if code == capture.JEQ_K else a & k) else jf
        elif code == capture.RET_K:
            return k
        else:
            raise AssertionError(f"unexpected instruction {code:#x}")


def test_the_filter_takes_whole_unfragmented_tunnel_packets_for_this_host_only():
    inner = bytes(IP(src="203.0.113.10", dst=VIP) / TCP(dport=80))
    ipip, gre, gue = (tunnelled(kind, inner) for kind in ("ipip", "gre", "gue"))
    ipip_f, gre_f, gue_f = (capture.tunnel_filter(socket.IPPROTO_IPIP), capture.tunnel_filter(socket.IPPROTO_GRE),
                            capture.tunnel_filter(socket.IPPROTO_UDP, GUE_PORT))
    assert run_filter(ipip_f, ipip) == run_filter(gre_f, gre) == run_filter(gue_f, gue) == 0x40000
    assert run_filter(ipip_f, gre) == run_filter(gre_f, ipip) == run_filter(gue_f, ipip) == 0
    assert run_filter(ipip_f, ipip, pkttype=3) == 0  # PACKET_OTHERHOST
    other_port = IP(gue)
    other_port[UDP].dport = 53
    assert run_filter(gue_f, bytes(other_port)) == 0
    with_options = bytes(IP(src="192.0.2.1", dst=RIP, options=b"\x01\x01\x01\x00") / UDP(dport=GUE_PORT) / GUE)
    assert run_filter(gue_f, with_options) == 0x40000
    for flags, frag in (("MF", 0), (0, 1)):
        assert run_filter(ipip_f, bytes(IP(src="192.0.2.1", dst=RIP, proto=4, flags=flags, frag=frag) / inner)) == 0
    assert run_filter(ipip_f, bytes(IP(src="192.0.2.1", dst=RIP, proto=4, flags="DF") / inner)) == 0x40000

