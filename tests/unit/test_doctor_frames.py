"""The doctor's packets, read back by scapy; and scapy-built answers, read by the doctor's parser."""

from __future__ import annotations

import socket

from scapy.layers.inet import GRE, ICMP, IP, TCP, UDP, IPerror, TCPerror
from scapy.layers.l2 import ARP, Ether

from pylvs.doctor import frames

DIP, VIP, RIP = "192.0.2.1", "192.0.2.100", "198.51.100.11"
D, V, R = (socket.inet_aton(a) for a in (DIP, VIP, RIP))
DMAC, RMAC = "02:00:00:00:00:01", "02:00:00:00:00:11"


def checksums_ok(pkt) -> None:
    """scapy recomputes every checksum it was given; equal means ours were right."""
    for layer in (IP, TCP, UDP):
        if layer in pkt and getattr(pkt[layer], "chksum", None) is not None:
            copy = pkt[layer].copy()
            copy.chksum = None
            assert layer(bytes(copy)).chksum == pkt[layer].chksum, layer.__name__


def test_a_syn_probe_has_its_number_as_port_and_ip_id_df_the_ttl_and_an_mss():
    pkt = IP(frames.syn(D, V, 20001, 80, 20001, ttl=1))
    assert (pkt.src, pkt.dst, pkt.id, pkt.ttl, pkt.flags) == (DIP, VIP, 20001, 1, "DF")
    assert (pkt[TCP].sport, pkt[TCP].dport, pkt[TCP].flags) == (20001, 80, "S")
    assert dict(pkt[TCP].options)["MSS"] == 1460
    checksums_ok(pkt)


def test_a_full_size_syn_is_padded_to_the_size_asked_for():
    pkt = IP(frames.syn(D, V, 20002, 80, 20002, ttl=1, size=1480))
    assert pkt.len == 1480 and len(bytes(pkt[TCP].payload)) == 1480 - 44
    checksums_ok(pkt)


def test_a_rst_closes_with_the_sequence_number_asked_for():
    pkt = IP(frames.rst(D, V, 20003, 80, 0x12345678, 20003))
    assert (pkt[TCP].flags, pkt[TCP].seq, pkt[TCP].sport, pkt[TCP].dport) == ("R", 0x12345678, 20003, 80)
    checksums_ok(pkt)


def test_tunnels_carry_the_probe_as_lvsd_would():
    inner = frames.syn(D, V, 20004, 80, 20004, ttl=1)
    ipip = IP(frames.encapsulate("ipip", D, R, inner, 20004))
    assert (ipip.proto, ipip.src, ipip.dst, ipip.id, ipip.flags) == (4, DIP, RIP, 20004, "DF")
    assert bytes(ipip.payload) == inner
    checksums_ok(ipip)
    gre = IP(frames.encapsulate("gre", D, R, inner, 20004))
    assert gre.proto == 47 and gre[GRE].proto == 0x0800 and bytes(gre[GRE].payload) == inner
    gue = IP(frames.encapsulate("gue", D, R, inner, 20004, 6080))
    assert gue.proto == 17 and gue[UDP].dport == 6080 and gue[UDP].len == 8 + 4 + len(inner)
    assert bytes(gue[UDP].payload)[:4] == b"\x00\x04\x00\x00" and bytes(gue[UDP].payload)[4:] == inner


def test_arp_requests_and_answers():
    frame = frames.ethernet(b"\xff" * 6, bytes.fromhex("020000000001"), b"")  # an Ethernet header alone
    assert Ether(frame).dst == "ff:ff:ff:ff:ff:ff"
    reply = bytes(Ether(src=RMAC, dst=DMAC) / ARP(op=2, hwsrc=RMAC, psrc=VIP, hwdst=DMAC, pdst=DIP))
    assert frames.parse_arp(reply) == (2, bytes.fromhex("020000000011"), V, D)
    assert frames.parse_arp(bytes(Ether() / IP())) is None


def to_director(pkt) -> bytes:
    return bytes(Ether(src=RMAC, dst=DMAC) / pkt)


def test_a_syn_ack_is_found_by_our_port_with_its_mss():
    a = frames.parse_ipv4(to_director(IP(src=VIP, dst=DIP) / TCP(sport=80, dport=20005, flags="SA", ack=77,
                                                                 options=[("MSS", 1440)])), D)
    assert (a.kind, a.key, a.src, a.sport, a.ack, a.mss) == ("synack", 20005, V, 80, 77, 1440)
    rst = frames.parse_ipv4(to_director(IP(src=VIP, dst=DIP) / TCP(sport=80, dport=20005, flags="RA")), D)
    assert (rst.kind, rst.key) == ("rst", 20005)


def test_an_icmp_error_is_found_by_the_quoted_ip_id_and_says_whether_it_quotes_the_tunnel():
    outer = IP(frames.encapsulate("ipip", D, R, frames.syn(D, V, 20006, 80, 20006, ttl=1), 20006))
    unreach = IP(src=RIP, dst=DIP) / ICMP(type=3, code=2) / bytes(outer)[:28]
    a = frames.parse_ipv4(to_director(unreach), D)
    assert (a.kind, a.key, a.icmp_type, a.icmp_code, a.about_outer, a.quoted_dst) == ("icmp", 20006, 3, 2, True, R)
    inner = IP(src=DIP, dst=VIP, id=20007, ttl=0) / TCP(sport=20007, dport=80, flags="S")
    exceeded = IP(src=RIP, dst=DIP) / ICMP(type=11, code=0) / IPerror(bytes(inner)) / TCPerror()
    b = frames.parse_ipv4(to_director(exceeded), D)
    assert (b.key, b.icmp_type, b.about_outer, b.quoted_dst) == (20007, 11, False, V)
    frag = IP(src="198.51.100.1", dst=DIP) / ICMP(type=3, code=4, nexthopmtu=1400) / bytes(outer)[:28]
    assert frames.parse_ipv4(to_director(frag), D).icmp_mtu == 1400


def test_what_is_not_an_answer_to_us_is_ignored():
    assert frames.parse_ipv4(to_director(IP(src=VIP, dst="192.0.2.2") / TCP(flags="SA")), D) is None
    assert frames.parse_ipv4(to_director(IP(src=VIP, dst=DIP) / TCP(flags="A")), D) is None
    assert frames.parse_ipv4(to_director(IP(src=VIP, dst=DIP, frag=10) / TCP(flags="SA")), D) is None
    assert frames.parse_ipv4(to_director(IP(src=VIP, dst=DIP) / ICMP(type=0)), D) is None
    other = IP(src=RIP, dst=DIP) / ICMP(type=3, code=3) / IPerror(src="192.0.2.9", dst=VIP) / TCPerror()
    assert frames.parse_ipv4(to_director(other), D) is None  # quotes someone else's packet
    assert frames.parse_ipv4(b"\x00" * 20, D) is None
