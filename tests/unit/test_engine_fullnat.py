"""FULLNAT through the engine: both addresses and ports translated, both directions (ipvs.md §4.6)."""

from __future__ import annotations

from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import ARP, Ether

from pylvs.engine.services import Method, pack_ip
from pylvs.packet import vnet
from tests.unit.director import (
    CLIENT,
    CLIENT_MAC,
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

LIPS = ["10.1.0.200", "10.1.0.201"]


def fullnat_engine(lips=LIPS, proto=6, vport=80, rport=8080):
    e = make_engine(method=Method.FULLNAT, proto=proto, vport=vport, rport=rport)
    svc = next(iter(e.table))
    for lip in lips:
        e.table.add_laddr(svc, pack_ip(lip))
    return e


def test_request_becomes_lip_lport_to_rip_rport():
    e = fullnat_engine()
    ifindex, buf = e.process(frame(from_client(TCP(sport=40000, dport=80, flags="S", seq=7))), 1, 0)[0]
    pkt = parse(buf)
    assert ifindex == 2 and pkt.src == DIP_MAC and pkt.dst == rs_mac(RIPS[2])
    assert pkt[IP].src == LIPS[0] and pkt[IP].dst == RIPS[2]
    assert 5000 <= pkt[TCP].sport <= 65535 and pkt[TCP].dport == 8080 and pkt[TCP].seq == 7
    assert pkt[IP].ttl == 63 and checksums_valid(pkt)


def test_reply_to_lip_becomes_vip_to_client():
    e = fullnat_engine()
    _, buf = e.process(frame(from_client(TCP(sport=40000, dport=80, flags="S"))), 1, 0)[0]
    lport = parse(buf)[TCP].sport
    reply = from_rs(RIPS[2], TCP(sport=8080, dport=lport, flags="SA"), dst=LIPS[0])
    ifindex, out = e.process(frame(reply), 2, 0.1)[0]
    pkt = parse(out)
    assert ifindex == 1 and pkt.dst == CLIENT_MAC
    assert pkt[IP].src == VIP and pkt[IP].dst == CLIENT
    assert pkt[TCP].sport == 80 and pkt[TCP].dport == 40000
    assert checksums_valid(pkt)


def test_udp_both_directions():
    e = fullnat_engine(proto=17, vport=53, rport=5353)
    _, buf = e.process(frame(from_client(UDP(sport=50000, dport=53) / b"q")), 1, 0)[0]
    req = parse(buf)
    assert req[IP].src == LIPS[0] and req[UDP].dport == 5353 and checksums_valid(req)
    reply = from_rs(RIPS[2], UDP(sport=5353, dport=req[UDP].sport) / b"a", dst=LIPS[0])
    rep = parse(e.process(frame(reply), 2, 0)[0][1])
    assert (rep[IP].src, rep[UDP].sport, rep[IP].dst, rep[UDP].dport) == (VIP, 53, CLIENT, 50000)
    assert checksums_valid(rep)


def test_partial_checksum_follows_both_address_changes():
    e = fullnat_engine()
    pkt = from_client(TCP(sport=40000, dport=80, flags="S") / (b"x" * 50))
    built = pkt.__class__(bytes(pkt))
    built[TCP].chksum = pseudo_sum(CLIENT, VIP, 6, built[IP].len - 20)
    _, out = e.process(frame(built, flags=vnet.F_NEEDS_CSUM, csum_start=34, csum_offset=16), 1, 0)[0]
    res = parse(out)
    assert res[TCP].chksum == pseudo_sum(LIPS[0], RIPS[2], 6, built[IP].len - 20)
    assert checksums_valid(res.__class__(complete_partial(res)))


def test_local_addresses_round_robin_and_ports_never_collide():
    e = fullnat_engine()
    seen = set()
    for i in range(200):
        # the same client port from many clients: every (LIP, lport, RIP, rport) must stay unique
        out = e.process(frame(from_client(TCP(sport=40000, dport=80, flags="S"), src=f"192.0.2.{i % 250 + 1}")),
                        1, 0)
        pkt = parse(out[0][1])
        key = (pkt[IP].src, pkt[TCP].sport, pkt[IP].dst, pkt[TCP].dport)
        assert key not in seen
        seen.add(key)
    assert {k[0] for k in seen} == set(LIPS)
    svc = next(iter(e.table))
    assert sum(la.conns for la in svc.laddrs) == 200
    e.tick(1000)  # all SYN_RECV connections expire: their ports are free again
    assert sum(la.conns for la in svc.laddrs) == 0 and len(e.conns) == 0


def test_without_local_address_nothing_is_forwarded():
    e = fullnat_engine(lips=[])
    assert e.process(frame(from_client(TCP(sport=1, dport=80, flags="S"))), 1, 0) == []
    assert e.drops["no_local_address"] == 1 and len(e.conns) == 0
    d = next(iter(e.table)).dests[0]
    assert (d.activeconns, d.inactconns) == (0, 0)


def test_arp_for_a_local_address_is_answered_on_the_real_server_side():
    e = fullnat_engine()
    req = Ether(src=rs_mac(RIPS[0]), dst="ff:ff:ff:ff:ff:ff") / ARP(op=1, hwsrc=rs_mac(RIPS[0]), psrc=RIPS[0],
                                                                      pdst=LIPS[1])
    out = e.process(frame(req), 2, 0)
    rep = parse(out[0][1])
    assert out[0][0] == 2 and rep[ARP].op == 2 and rep[ARP].psrc == LIPS[1] and rep[ARP].hwsrc == DIP_MAC


def handshake(e, isn=1000, mss=1460):
    """SYN, SYN-ACK (with MSS), ACK; returns (local port, the SYN-ACK the client got, the ACK the server got)."""
    _, buf = e.process(frame(from_client(TCP(sport=40000, dport=80, flags="S", seq=isn))), 1, 0)[0]
    lport = parse(buf)[TCP].sport
    synack = from_rs(RIPS[2], TCP(sport=8080, dport=lport, flags="SA", seq=5000, ack=isn + 1,
                                  options=[("MSS", mss)]), dst=LIPS[0])
    got_synack = parse(e.process(frame(synack), 2, 0)[0][1])
    ack = from_client(TCP(sport=40000, dport=80, flags="A", seq=isn + 1, ack=5001))
    got_ack = parse(e.process(frame(ack), 1, 0)[0][1])
    return lport, got_synack, got_ack


def test_toa_option_carries_the_client_address_in_the_first_ack():
    e = fullnat_engine()
    _, synack, ack = handshake(e)
    assert dict(synack[TCP].options)["MSS"] == 1460  # untouched without the PROXY protocol
    toa = [o for o in ack[TCP].options if o[0] == 254]
    assert len(toa) == 1 and toa[0][1] == (40000).to_bytes(2, "big") + bytes(map(int, CLIENT.split(".")))
    assert ack[IP].len == 40 + 8 and ack[TCP].dataofs == 7 and ack[IP].src == LIPS[0]
    assert checksums_valid(ack)
    data = from_client(TCP(sport=40000, dport=80, flags="PA", seq=1001, ack=5001) / b"GET /")
    got = parse(e.process(frame(data), 1, 0)[0][1])
    assert not [o for o in got[TCP].options if o[0] == 254] and got[TCP].seq == 1001


def test_proxy_protocol_v2_goes_in_front_of_the_first_data_and_shifts_sequence_numbers():
    e = fullnat_engine()
    next(iter(e.table)).proxy_protocol = "v2"
    lport, synack, ack = handshake(e)
    assert dict(synack[TCP].options)["MSS"] == 1460 - 28 and checksums_valid(synack)
    assert ack[IP].len == 40 and ack[TCP].seq == 1001  # the handshake ACK passes as it is
    data = from_client(TCP(sport=40000, dport=80, flags="PA", seq=1001, ack=5001) / b"GET / HTTP/1.0\r\n\r\n")
    got = parse(e.process(frame(data), 1, 0)[0][1])
    payload = bytes(got[TCP].payload)
    assert payload[:12] == b"\r\n\r\n\x00\r\nQUIT\n" and payload[12:16] == b"\x21\x11\x00\x0c"
    assert payload[16:28] == bytes(map(int, CLIENT.split("."))) + bytes(map(int, VIP.split("."))) + \
        (40000).to_bytes(2, "big") + (80).to_bytes(2, "big")
    assert payload[28:] == b"GET / HTTP/1.0\r\n\r\n" and got[TCP].seq == 1001 and checksums_valid(got)
    # the server acknowledges header + request; the client must see only its own bytes acknowledged
    srv_ack = from_rs(RIPS[2], TCP(sport=8080, dport=lport, flags="A", seq=5001, ack=1001 + 28 + 18,
                                   options=[("SAck", (1001 + 28 + 50, 1001 + 28 + 60))]), dst=LIPS[0])
    got = parse(e.process(frame(srv_ack), 2, 0)[0][1])
    assert got[TCP].ack == 1001 + 18 and dict(got[TCP].options)["SAck"] == (1001 + 50, 1001 + 60)
    assert checksums_valid(got)
    more = from_client(TCP(sport=40000, dport=80, flags="A", seq=1019, ack=5001) / b"x")
    got = parse(e.process(frame(more), 1, 0)[0][1])
    assert got[TCP].seq == 1019 + 28 and bytes(got[TCP].payload) == b"x" and checksums_valid(got)
    again = parse(e.process(frame(data), 1, 0)[0][1])  # a retransmitted first segment gets the header again
    assert bytes(again[TCP].payload)[:12] == b"\r\n\r\n\x00\r\nQUIT\n" and again[TCP].seq == 1001


def test_proxy_protocol_v1_is_a_text_line():
    e = fullnat_engine()
    next(iter(e.table)).proxy_protocol = "v1"
    handshake(e)
    data = from_client(TCP(sport=40000, dport=80, flags="PA", seq=1001, ack=5001) / b"hi")
    got = parse(e.process(frame(data), 1, 0)[0][1])
    assert bytes(got[TCP].payload) == f"PROXY TCP4 {CLIENT} {VIP} 40000 80\r\n".encode() + b"hi"
    assert checksums_valid(got)


def test_ttl_one_gets_time_exceeded_from_the_vip_before_toa_is_added():
    e = fullnat_engine()
    e.process(frame(from_client(TCP(sport=40000, dport=80, flags="S", seq=7))), 1, 0)
    ack = from_client(TCP(sport=40000, dport=80, flags="A", seq=8), ttl=1)  # the one TOA would ride on
    kernel_icmp_error(e.process(frame(ack), 1, 0.1), bytes(ack[IP]), VIP, CLIENT, 11, 0)
    assert e.drops["ttl_exceeded"] == 1


def test_ttl_one_reply_gets_time_exceeded_from_the_local_address():
    e = fullnat_engine()
    _, buf = e.process(frame(from_client(TCP(sport=40000, dport=80, flags="S"))), 1, 0)[0]
    lport = parse(buf)[TCP].sport
    reply = from_rs(RIPS[2], TCP(sport=8080, dport=lport, flags="SA"), dst=LIPS[0], ttl=1)
    kernel_icmp_error(e.process(frame(reply), 2, 0.1), bytes(reply[IP]), LIPS[0], RIPS[2], 11, 0, ifindex=2)


def test_too_big_with_df_gets_fragmentation_needed_and_without_is_fragmented():
    e = fullnat_engine(proto=17, vport=53, rport=5353)
    big = built(from_client(UDP(sport=50000, dport=53) / (b"u" * 1972)), flags="DF", id=99)
    assert big[IP].len == 2000
    quoted = big[IP].copy()
    quoted.ttl, quoted.chksum = 63, None
    kernel_icmp_error(e.process(frame(big), 1, 0), bytes(IP(bytes(quoted))), VIP, CLIENT, 3, 4, mtu=1500)
    assert e.drops["frag_needed"] == 1
    plain = built(from_client(UDP(sport=50000, dport=53) / (b"u" * 1972)), id=99)
    out = e.process(frame(plain), 1, 0.1)
    assert [len(bytes(parse(b)[IP])) for _, b in out] == [1500, 520]
    whole = reassembled(out, 1500, 2)
    assert whole.src == LIPS[0] and whole.dst == RIPS[2] and whole.ttl == 63 and whole.id == 99
    assert whole[UDP].dport == 5353 and bytes(whole[UDP].payload) == b"u" * 1972
    assert checksums_valid(Ether() / whole)
