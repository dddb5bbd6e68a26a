"""lvs-rs's IPv6-in-IPv6 decapsulation: which frames of the link-level socket become which TUN writes."""

from __future__ import annotations

import socket

from scapy.layers.inet import TCP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether

from pylvs.packet import vnet
from pylvs.rs import capture, decap6

VIP6 = "2001:db8:2::100"
RIP6 = "2001:db8:2::11"
DIP6 = "2001:db8:2::1"
V = {socket.inet_pton(socket.AF_INET6, VIP6)}
LOCAL = {socket.inet_pton(socket.AF_INET6, RIP6)}


def tunnelled(inner_dst: str = VIP6, outer_dst: str = RIP6, nh: int = 41, **vnet_kw) -> memoryview:
    inner = IPv6(src="2001:db8:10::10", dst=inner_dst, hlim=63) / TCP(sport=40000, dport=80, flags="S")
    pkt = Ether(dst="02:00:00:00:02:11", src="02:00:00:00:02:01") / IPv6(src=DIP6, dst=outer_dst, nh=nh) / inner
    return memoryview(vnet.pack(**vnet_kw) + bytes(pkt))


def test_the_inner_packet_to_a_vip_is_written_as_it_was_sent():
    frame = tunnelled()
    header, inner, why = decap6.from_link6(frame, capture.ARPHRD_ETHER, V, LOCAL)
    assert why == "" and header == vnet.EMPTY
    got = IPv6(bytes(inner))
    assert (got.src, got.dst, got.hlim, got[TCP].dport) == ("2001:db8:10::10", VIP6, 63, 80)
    assert bytes(inner) == bytes(frame)[vnet.VNET_HDR_LEN + 14 + 40:]


def test_a_partial_checksum_moves_with_the_inner_packet():
    frame = tunnelled(flags=vnet.F_NEEDS_CSUM, csum_start=14 + 40 + 40, csum_offset=16)
    header, _, why = decap6.from_link6(frame, capture.ARPHRD_ETHER, V, LOCAL)
    assert why == "" and vnet.unpack(header) == (vnet.F_NEEDS_CSUM, vnet.GSO_NONE, 40 + 20, 0, 40, 16)


def test_a_tcp_super_frame_stays_one_with_its_gso_state():
    # What the kernel fast path sends: the client's GSO frame tunnelled whole (bpf_skb_adjust_room).
    frame = tunnelled(flags=vnet.F_NEEDS_CSUM, gso_type=vnet.GSO_TCPV6, gso_size=1400, hdr_len=14 + 40 + 60,
                      csum_start=14 + 40 + 40, csum_offset=16)
    header, inner, why = decap6.from_link6(frame, capture.ARPHRD_ETHER, V, LOCAL)
    assert why == "" and vnet.unpack(header) == (vnet.F_NEEDS_CSUM, vnet.GSO_TCPV6, 40 + 20, 1400, 40, 16)
    assert IPv6(bytes(inner))[TCP].dport == 80
    udp_gso = tunnelled(flags=vnet.F_NEEDS_CSUM, gso_type=vnet.GSO_UDP_L4, gso_size=1400, csum_start=14 + 80,
                        csum_offset=16)
    assert decap6.from_link6(udp_gso, capture.ARPHRD_ETHER, V, LOCAL)[2] == "gso_unsupported"  # TCP inside


def test_what_is_not_taken():
    assert decap6.from_link6(tunnelled(inner_dst="2001:db8:2::99"), 1, V, LOCAL)[2] == "not_vip"
    assert decap6.from_link6(tunnelled(outer_dst="2001:db8:2::12"), 1, V, LOCAL)[2] == "not_local"
    assert decap6.from_link6(tunnelled(nh=4), 1, V, LOCAL)[2] == "other_protocol"
    assert decap6.from_link6(tunnelled(gso_type=vnet.GSO_TCPV6, gso_size=1400), 1, V, LOCAL)[2] == "gso_without_csum"
    short = tunnelled()[:vnet.VNET_HDR_LEN + 14 + 60]
    assert decap6.from_link6(short, 1, V, LOCAL)[2] == "malformed"


def test_the_filter_program_is_well_formed():
    program = decap6.tunnel6_filter()
    for i, (code, jt, jf, _) in enumerate(program):
        if code == capture.JEQ_K:
            assert i + 1 + jt < len(program) and i + 1 + jf < len(program)
    assert program[-1] == (capture.RET_K, 0, 0, 0) and program[-2][0] == capture.RET_K


def gre_tunnelled(csum: bool, corrupt: bool = False) -> memoryview:
    from scapy.layers.l2 import GRE

    inner = IPv6(src="2001:db8:10::10", dst=VIP6, hlim=63) / TCP(sport=40000, dport=80, flags="S")
    gre = GRE(proto=0x86DD, chksum_present=int(csum)) / inner
    raw = bytearray(bytes(Ether(dst="02:00:00:00:02:11") / IPv6(src=DIP6, dst=RIP6, nh=47) / gre))
    if corrupt:
        raw[-1] ^= 0xFF
    return memoryview(vnet.pack() + bytes(raw))


def test_ipv6_in_gre_over_ipv6():
    for csum in (False, True):
        frame = gre_tunnelled(csum)
        header, inner, why = decap6.from_link6(frame, capture.ARPHRD_ETHER, V, LOCAL, "gre")
        assert why == "" and header == vnet.EMPTY and IPv6(bytes(inner))[TCP].dport == 80
    assert decap6.from_link6(gre_tunnelled(True, corrupt=True), 1, V, LOCAL, "gre")[2] == "bad_checksum"
    assert decap6.from_link6(gre_tunnelled(False), 1, V, LOCAL, "ipip")[2] == "other_protocol"


def test_ipv6_in_gue_over_ipv6():
    from scapy.layers.inet import UDP

    inner = IPv6(src="2001:db8:10::10", dst=VIP6, hlim=63) / TCP(sport=40000, dport=80, flags="S")
    pkt = (Ether(dst="02:00:00:00:02:11") / IPv6(src=DIP6, dst=RIP6) / UDP(sport=40001, dport=6080)
           / (b"\x00\x29\x00\x00" + bytes(inner)))
    frame = memoryview(vnet.pack() + bytes(pkt))
    header, got, why = decap6.from_link6(frame, capture.ARPHRD_ETHER, V, LOCAL, "gue", 6080)
    assert why == "" and bytes(got) == bytes(inner)
    assert decap6.from_link6(frame, 1, V, LOCAL, "gue", 6081)[2] == "other_port"
    bad = bytearray(frame)
    bad[-1] ^= 1
    assert decap6.from_link6(memoryview(bytes(bad)), 1, V, LOCAL, "gue", 6080)[2] == "bad_checksum"
    v4 = pkt.copy()
    v4[UDP].remove_payload()
    v4 = v4 / (b"\x00\x04\x00\x00" + bytes(inner))  # proto_ctype 4: not for an IPv6 VIP
    assert decap6.from_link6(memoryview(vnet.pack() + bytes(v4)), 1, V, LOCAL, "gue", 6080)[2] == "other_protocol"
