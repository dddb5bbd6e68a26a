"""ICMP errors about FULLNAT, FULLNAT6, NAT64 and NAT46 connections, translated for the other side: from
the real server's side (quoting LIP -> RIP) to the client, quoting its packet as it sent it; from the
client's side (quoting VIP -> CIP) to the real server, quoting its reply as it sent it; across families
with RFC 7915's types, codes and MTUs. Every field and checksum is read back with scapy."""

from __future__ import annotations

import random

from scapy.layers.inet import ICMP, IP, TCP, UDP, IPerror, TCPerror
from scapy.layers.inet6 import ICMPv6DestUnreach, ICMPv6PacketTooBig, ICMPv6ParamProblem, IPerror6, IPv6
from scapy.layers.l2 import Ether

from pylvs.engine.services import Method, pack_ip
from tests.unit.director import CLIENT, CLIENT_MAC, DIP_MAC, RIPS, VIP, VIP_MAC, from_client, from_rs, rs_mac
from tests.unit.director import checksums_valid as checksums_valid4
from tests.unit.test_engine_fullnat import LIPS, fullnat_engine
from tests.unit.test_engine_ipv6 import CLIENT6, RIPS6, RS_MAC, VIP6, checksums_valid, frame, make_engine6, one
from tests.unit.test_engine_ipv6 import from_client as from_client6
from tests.unit.test_engine_nat46 import LIP6, RIP6, RS6_MAC, from_rs6, make_nat46
from tests.unit.test_engine_nat64 import LIP4, RIP4, RS4_MAC, from_rs4, make_nat64

HEADER_V2 = 28  # PROXY v2 with IPv4 addresses


def ip_header_valid(raw: bytes) -> bool:
    """The IPv4 header at the start of `raw` has the checksum scapy computes for it."""
    ihl = (raw[0] & 0x0F) * 4
    head = IP(raw[:ihl])
    head.chksum = None
    return bytes(head)[:ihl] == raw[:ihl]


def tcp_checksum(pkt) -> int:
    """The TCP checksum the sender put on `pkt` (scapy fills it in when building it)."""
    return Ether(bytes(pkt))[TCP].chksum


def test_fullnat_frag_needed_from_the_real_server_reaches_the_client_quoting_its_packet():
    e = fullnat_engine()
    sent = from_client(TCP(sport=40000, dport=80, flags="S", seq=77, window=999))
    _, req = one(e.process(frame(sent), 1, 0))
    lport = req[TCP].sport
    # A router on the real server's side cannot forward the request: it quotes it (LIP -> RIP) to the LIP.
    err = Ether(src=rs_mac(RIPS[2]), dst=DIP_MAC) / IP(src=RIPS[2], dst=LIPS[0], ttl=50) / ICMP(
        type=3, code=4, nexthopmtu=1400) / bytes(req[IP])
    ifindex, out = one(e.process(frame(err), 2, 0.1))
    assert ifindex == 1 and (out.src, out.dst) == (VIP_MAC, CLIENT_MAC)
    assert (out[IP].src, out[IP].dst, out[IP].ttl, out[ICMP].type, out[ICMP].code, out[ICMP].nexthopmtu) == (
        VIP, CLIENT, 49, 3, 4, 1400)
    quote = bytes(out[ICMP])[8:]
    original = bytes(sent[IP])
    # The quote is the client's packet: addresses, ports, TCP checksum; only the TTL went down by one.
    assert quote[20:] == original[20:] and quote[12:20] == original[12:20] and quote[8] == original[8] - 1
    assert out[TCPerror].sport == 40000 and out[TCPerror].dport == 80 and lport != 40000
    assert ip_header_valid(quote) and checksums_valid4(out)


def test_fullnat_error_from_the_client_reaches_the_real_server_quoting_its_reply():
    e = fullnat_engine(proto=17, vport=53, rport=5353)
    _, req = one(e.process(frame(from_client(UDP(sport=40000, dport=53) / b"q")), 1, 0))
    lport = req[UDP].sport
    reply = from_rs(RIPS[2], UDP(sport=5353, dport=lport) / b"answer", dst=LIPS[0])
    _, rep = one(e.process(frame(reply), 2, 0.1))
    err = Ether(src=CLIENT_MAC, dst=VIP_MAC) / IP(src=CLIENT, dst=VIP) / ICMP(type=3, code=3) / bytes(rep[IP])
    ifindex, out = one(e.process(frame(err), 1, 0.2))
    assert ifindex == 2 and out.dst == rs_mac(RIPS[2])
    assert (out[IP].src, out[IP].dst, out[ICMP].type, out[ICMP].code) == (LIPS[0], RIPS[2], 3, 3)
    quote = bytes(out[ICMP])[8:]
    original = bytes(reply[IP])
    assert quote[20:] == original[20:] and quote[12:20] == original[12:20]
    assert ip_header_valid(quote) and checksums_valid4(out)


def test_fullnat6_packet_too_big_reaches_the_client():
    e = make_engine6(method=Method.FULLNAT)
    svc = next(iter(e.table))
    e.table.add_laddr(svc, pack_ip("fd00:1::200"))
    sent = from_client6(TCP(sport=40000, dport=80, flags="S", seq=5))
    _, req = one(e.process(frame(sent), 1, 0))
    rip = req[IPv6].dst
    err = Ether(src=RS_MAC[rip], dst=DIP_MAC) / IPv6(src=RIPS6[0], dst="fd00:1::200", hlim=60) / ICMPv6PacketTooBig(
        mtu=1400) / bytes(req[IPv6])
    ifindex, out = one(e.process(frame(err), 2, 0.1))
    assert ifindex == 1 and (out[IPv6].src, out[IPv6].dst, out[IPv6].hlim) == (VIP6, CLIENT6, 59)
    assert out[ICMPv6PacketTooBig].mtu == 1400 and checksums_valid(out)
    quote = bytes(out[ICMPv6PacketTooBig])[8:]
    original = bytes(sent[IPv6])
    assert quote[8:] == original[8:] and quote[7] == original[7] - 1


def test_nat64_frag_needed_becomes_packet_too_big_with_twenty_more_bytes():
    engine = make_nat64(proto=6, vport=80, rport=8080, proxy="v2")
    sent = from_client6(TCP(sport=40000, dport=80, flags="S", seq=99))
    _, syn = one(engine.process(frame(sent), 1, 0.0))
    lport = syn[TCP].sport
    one(engine.process(frame(from_rs4(TCP(sport=8080, dport=lport, flags="SA", seq=7, ack=100))), 2, 0.1))
    one(engine.process(frame(from_client6(TCP(sport=40000, dport=80, flags="PA", seq=100, ack=8) / b"GET /")), 1, 0.2))
    # The client's next segment, shifted by the PROXY header on the server's side: the router quotes that.
    client_seg = from_client6(TCP(sport=40000, dport=80, flags="PA", seq=105, ack=8) / b"more")
    _, req = one(engine.process(frame(client_seg), 1, 0.3))
    assert req[TCP].seq == 105 + 52  # PROXY v2 with IPv6 addresses: 52 bytes
    err = Ether(src=RS4_MAC, dst=DIP_MAC) / IP(src="10.1.0.254", dst=LIP4, ttl=40) / ICMP(
        type=3, code=4, nexthopmtu=1400) / bytes(req[IP])
    ifindex, out = one(engine.process(frame(err), 2, 0.4))
    assert ifindex == 1 and out.type == 0x86DD
    assert (out[IPv6].src, out[IPv6].dst, out[IPv6].hlim, out[IPv6].nh) == (VIP6, CLIENT6, 39, 58)
    assert (out[ICMPv6PacketTooBig].type, out[ICMPv6PacketTooBig].mtu) == (2, 1420) and checksums_valid(out)
    q = out[IPerror6]
    assert (q.src, q.dst, q.nh, q.plen, q.hlim) == (CLIENT6, VIP6, 6, 20 + 4, 63)
    assert (q[TCPerror].sport, q[TCPerror].dport, q[TCPerror].seq) == (40000, 80, 105)
    assert q[TCPerror].chksum == tcp_checksum(client_seg)  # the client's own checksum, through both families


def test_nat64_error_from_the_client_reaches_the_ipv4_server():
    engine = make_nat64()
    _, req = one(engine.process(frame(from_client6(UDP(sport=50000, dport=53) / b"query")), 1, 0.0))
    lport = req[UDP].sport
    reply = from_rs4(UDP(sport=5353, dport=lport) / b"answer")
    _, rep = one(engine.process(frame(reply), 2, 0.1))
    err = (Ether(src=CLIENT_MAC, dst=VIP_MAC) / IPv6(src=CLIENT6, dst=VIP6) / ICMPv6DestUnreach(code=4)
           / bytes(rep[IPv6]))
    ifindex, out = one(engine.process(frame(err), 1, 0.2))
    assert ifindex == 2 and out.type == 0x0800
    assert (out[IP].src, out[IP].dst, out[ICMP].type, out[ICMP].code) == (LIP4, RIP4, 3, 3)
    q = out[IPerror]
    assert (q.src, q.dst, q.proto) == (RIP4, LIP4, 17) and (q.sport, q.dport) == (5353, lport)
    assert bytes(out[ICMP])[8 + 20:] == bytes(reply[UDP])  # the reply's UDP header and data, checksum included
    assert ip_header_valid(bytes(out[ICMP])[8:]) and checksums_valid4(out)


def nat46_after_the_proxy_header():
    """A NAT46 connection under PROXY v2 whose first data (5 bytes from sequence number 100) went out
    behind the header; the engine and the local port."""
    engine = make_nat46(proto=6, vport=80, rport=8080, proxy="v2")
    _, syn = one(engine.process(frame(from_client(TCP(sport=40000, dport=80, flags="S", seq=99))), 1, 0.0))
    lport = syn[TCP].sport
    one(engine.process(frame(from_rs6(TCP(sport=8080, dport=lport, flags="SA", seq=7, ack=100))), 2, 0.1))
    one(engine.process(frame(from_client(TCP(sport=40000, dport=80, flags="PA", seq=100, ack=8) / b"GET /")), 1, 0.2))
    return engine, lport


def test_nat46_packet_too_big_becomes_frag_needed_with_the_client_sequence_number():
    engine, lport = nat46_after_the_proxy_header()
    client_seg = from_client(TCP(sport=40000, dport=80, flags="PA", seq=105, ack=8) / b"more")
    _, req = one(engine.process(frame(client_seg), 1, 0.3))
    assert req[TCP].seq == 105 + HEADER_V2
    err = Ether(src=RS6_MAC, dst=DIP_MAC) / IPv6(src=RIP6, dst=LIP6, hlim=64) / ICMPv6PacketTooBig(
        mtu=1400) / bytes(req[IPv6])
    ifindex, out = one(engine.process(frame(err), 2, 0.4))
    assert ifindex == 1 and out.type == 0x0800
    assert (out[IP].src, out[IP].dst, out[IP].ttl, out[ICMP].type, out[ICMP].code, out[ICMP].nexthopmtu) == (
        VIP, CLIENT, 63, 3, 4, 1380)
    q = out[IPerror]
    assert (q.src, q.dst, q.proto, q.len) == (CLIENT, VIP, 6, 20 + 20 + 4)
    assert (q[TCPerror].sport, q[TCPerror].dport, q[TCPerror].seq) == (40000, 80, 105)
    assert q[TCPerror].chksum == tcp_checksum(client_seg)
    assert ip_header_valid(bytes(out[ICMP])[8:]) and checksums_valid4(out)


def test_nat46_error_from_the_client_reaches_the_ipv6_server_with_its_acknowledgement():
    engine, lport = nat46_after_the_proxy_header()
    reply = from_rs6(TCP(sport=8080, dport=lport, flags="PA", seq=8, ack=105 + HEADER_V2) / b"HTTP")
    _, rep = one(engine.process(frame(reply), 2, 0.3))
    assert rep[TCP].ack == 105
    err = Ether(src=CLIENT_MAC, dst=VIP_MAC) / IP(src=CLIENT, dst=VIP) / ICMP(type=11, code=0) / bytes(rep[IP])
    ifindex, out = one(engine.process(frame(err), 1, 0.4))
    assert ifindex == 2 and out.type == 0x86DD and (out[IPv6].src, out[IPv6].dst) == (LIP6, RIP6)
    assert (bytes(out[IPv6].payload)[0], bytes(out[IPv6].payload)[1]) == (3, 0) and checksums_valid(out)
    q = out[IPerror6]
    assert (q.src, q.dst, q.nh) == (RIP6, LIP6, 6)
    assert bytes(q.payload) == bytes(reply[TCP])  # the server's segment, acknowledgement and checksum as it sent it


def test_untranslatable_types_are_dropped_and_parameter_problem_pointers_mapped():
    engine = make_nat46(proto=17)
    _, req = one(engine.process(frame(from_client(UDP(sport=40000, dport=53) / b"q")), 1, 0.0))
    quote = bytes(req[IPv6])
    unknown = Ether(src=RS6_MAC, dst=DIP_MAC) / IPv6(src=RIP6, dst=LIP6) / ICMPv6DestUnreach(code=6) / quote
    assert engine.process(frame(unknown), 2, 0.1) == [] and engine.drops["icmp_untranslatable"] == 1
    problem = Ether(src=RS6_MAC, dst=DIP_MAC) / IPv6(src=RIP6, dst=LIP6) / ICMPv6ParamProblem(code=0, ptr=7) / quote
    _, out = one(engine.process(frame(problem), 2, 0.2))
    assert (out[ICMP].type, out[ICMP].code, out[ICMP].ptr) == (12, 0, 8)  # the hop limit is the TTL
    assert checksums_valid4(out) and out[IPerror].dst == VIP
    next_header = Ether(src=RS6_MAC, dst=DIP_MAC) / IPv6(src=RIP6, dst=LIP6) / ICMPv6ParamProblem(code=1, ptr=6) / quote
    _, out = one(engine.process(frame(next_header), 2, 0.3))
    assert (out[ICMP].type, out[ICMP].code) == (3, 2)  # protocol unreachable
    quench = Ether(src=CLIENT_MAC, dst=VIP_MAC) / IP(src=CLIENT, dst=VIP) / ICMP(type=4) / bytes(
        IP(src=VIP, dst=CLIENT) / UDP(sport=53, dport=40000))
    assert engine.process(frame(quench), 1, 0.4) == [] and engine.drops["icmp_untranslatable"] == 2


def test_garbled_errors_never_raise():
    """Errors about live NAT64 and NAT46 connections with random bytes changed in the quote (or cut short):
    each is translated, dropped or ignored, never an exception."""
    rng = random.Random(15)
    engine64 = make_nat64()
    _, req = one(engine64.process(frame(from_client6(UDP(sport=50000, dport=53) / b"query")), 1, 0.0))
    err64 = Ether(src=RS4_MAC, dst=DIP_MAC) / IP(src=RIP4, dst=LIP4) / ICMP(type=3, code=4, nexthopmtu=1400) / bytes(
        req[IP])
    engine46 = make_nat46()
    _, req = one(engine46.process(frame(from_client(UDP(sport=50000, dport=53) / b"query")), 1, 0.0))
    err46 = Ether(src=RS6_MAC, dst=DIP_MAC) / IPv6(src=RIP6, dst=LIP6) / ICMPv6PacketTooBig(mtu=1400) / bytes(req[IPv6])
    for engine, err, icmp_at in ((engine64, bytes(err64), 14 + 20), (engine46, bytes(err46), 14 + 40)):
        for n in range(400):
            raw = bytearray(err)
            for _ in range(rng.randint(1, 3)):
                at = rng.randrange(icmp_at, len(raw))
                raw[at] = rng.randrange(256)
            if n % 4 == 0:
                raw = raw[:rng.randrange(icmp_at + 8, len(raw))]
            engine.process(frame(Ether(bytes(raw))), 2, 0.1 + n / 1000)  # must not raise
    assert engine64.conns.lookup(17, pack_ip(CLIENT6) + pack_ip(VIP6) + (50000).to_bytes(2, "big")
                                 + (53).to_bytes(2, "big")) is not None
