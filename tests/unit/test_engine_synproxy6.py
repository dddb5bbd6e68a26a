"""The SYN proxy over IPv6: cookies with Linux's IPv6 MSS table, the SYN-ACK, the cookie ACK's check, the
SYN to the real server and the shifting, for NAT66, FULLNAT over IPv6 and NAT64; frames built and read
back with scapy, every checksum recomputed with the IPv6 pseudo-header."""

from __future__ import annotations

import pytest
from scapy.layers.inet import IP, TCP
from scapy.layers.inet6 import IPv6, IPv6ExtHdrDestOpt
from scapy.layers.l2 import Ether
from scapy.packet import Raw

from pylvs.engine.flow import F_ENGINE_ONLY
from pylvs.engine.hops import Hop
from pylvs.engine.services import Method, RealServer, VirtualService, pack_ip
from pylvs.engine.syncookie import MSS_TABLE6, SynCookies, decode_ts
from pylvs.engine.synproxy import OUR_WSCALE
from tests.unit.director import DIP_MAC, mac, parse
from tests.unit.director import checksums_valid as checksums_valid4
from tests.unit.test_engine_ipv6 import (
    CLIENT6,
    LIP6,
    RIPS6,
    VIP6,
    checksums_valid,
    frame,
    from_client,
    from_rs,
    make_engine6,
)

NOW = 1_000_000.0
RIP6 = RIPS6[2]  # rr starts at the newest real server
CPORT, CISN, RISN = 40000, 1000, 3_000_000_000
REQUEST = b"GET / HTTP/1.0\r\n\r\n"
FULL_OPTS = [("MSS", 1440), ("SAckOK", b""), ("Timestamp", (5000, 0)), ("NOP", None), ("WScale", 7)]
RS_OPTS = [("MSS", 1400), ("SAckOK", b""), ("Timestamp", (90000, 5001)), ("NOP", None), ("WScale", 7)]
TUPLE6 = pack_ip(CLIENT6) + pack_ip(VIP6) + CPORT.to_bytes(2, "big") + (80).to_bytes(2, "big")
RIP4, RS4_MAC, LIP4 = "10.1.0.11", "02:00:00:00:02:0b", "10.1.0.100"


def proxy_engine6(method: Method = Method.MASQ, rs_mtu: int = 1500):
    e = make_engine6(method=method, rs_mtu=rs_mtu, synproxy=True)
    if method == Method.FULLNAT:
        e.table.add_laddr(e.table.find(6, pack_ip(VIP6), 80), pack_ip(LIP6))
    return e


def nat64_engine():
    e = make_engine6(synproxy=True)
    e.table.flush()
    svc = e.table.add_service(VirtualService(6, pack_ip(VIP6), 80, "rr", synproxy=True))
    e.table.add_dest(svc, RealServer(pack_ip(RIP4), 8080, method=Method.FULLNAT))
    e.table.add_laddr(svc, pack_ip(LIP4))
    e.routes.hops[pack_ip(RIP4)] = Hop(2, mac(RS4_MAC), mac(DIP_MAC))
    return e


def one(out, ifindex):
    assert len(out) == 1 and out[0][0] == ifindex, out
    pkt = parse(out[0][1])
    assert checksums_valid(pkt) if IPv6 in pkt else checksums_valid4(pkt)
    return pkt


def opts(pkt) -> dict:
    return {name: value for name, value in pkt[TCP].options if name != "NOP"}


def syn(e, options=FULL_OPTS, now=NOW):
    return one(e.process(frame(from_client(TCP(sport=CPORT, dport=80, flags="S", seq=CISN, options=options))),
                         1, now), 1)


def client(e, flags="A", seq=CISN + 1, ack=0, options=(), payload=b"", now=NOW + 0.1, window=502, ext=None):
    l4 = TCP(sport=CPORT, dport=80, flags=flags, seq=seq, ack=ack, window=window, options=list(options))
    return e.process(frame(from_client(l4 / Raw(payload) if payload else l4, ext=ext)), 1, now)


def server(e, flags="A", seq=RISN + 1, ack=CISN + 1, options=(), payload=b"", now=NOW + 0.2, dst=CLIENT6,
           dport=CPORT):
    l4 = TCP(sport=8080, dport=dport, flags=flags, seq=seq, ack=ack, window=1000, options=list(options))
    return e.process(frame(from_rs(RIP6, l4 / Raw(payload) if payload else l4, dst=dst)), 2, now)


def cookie_ack(e, synack, payload=REQUEST, ext=None):
    ts = opts(synack)["Timestamp"]
    return client(e, ack=synack[TCP].seq + 1, options=[("NOP", None), ("NOP", None), ("Timestamp", (5001, ts[0]))],
                  payload=payload, ext=ext)


# -- cookies ------------------------------------------------------------------------------------

@pytest.mark.parametrize(("mss", "encoded"), [(536, 1220), (1300, 1220), (1420, 1420), (1439, 1420), (1440, 1440),
                                              (1460, 1440), (8940, 8940), (65000, 8940)])
def test_an_ipv6_cookie_carries_the_mss_of_linuxs_ipv6_table(mss, encoded):
    c = SynCookies(b"k")
    cookie, got = c.make(TUPLE6, 12345, mss, NOW)
    assert got == encoded and encoded in MSS_TABLE6
    assert c.check(TUPLE6, 12345, cookie, NOW) == encoded
    assert c.check(TUPLE6, 12345, cookie, NOW + 120) is None  # two minutes old
    assert c.check(TUPLE6[:15] + b"\x01" + TUPLE6[16:], 12345, cookie, NOW) is None  # another client


# -- the handshake ------------------------------------------------------------------------------

def test_an_ipv6_syn_is_answered_with_a_cookie_syn_ack_and_no_state():
    e = proxy_engine6()
    synack = syn(e)
    assert synack.type == 0x86DD and (synack[IPv6].src, synack[IPv6].dst, synack[IPv6].nh) == (VIP6, CLIENT6, 6)
    assert (synack[TCP].sport, synack[TCP].dport, str(synack[TCP].flags), synack[TCP].ack) == (80, CPORT, "SA",
                                                                                                CISN + 1)
    o = opts(synack)
    assert o["MSS"] == 1500 - 60 and "SAckOK" in o and o["WScale"] == OUR_WSCALE  # IPv6 + TCP headers
    tsval, tsecr = o["Timestamp"]
    assert tsecr == 5000 and decode_ts(tsval) == (7, True)
    assert synack[TCP].window == 16 * 1440  # what is held for the client until the real server answers
    assert len(e.conns) == 0 and e.synproxy.counters["syn_acks"] == 1


def test_the_syn_ack_announces_the_mss_of_the_clients_link():
    e = proxy_engine6()
    e.routes.hops[pack_ip(CLIENT6)].mtu = 1280
    assert opts(syn(e))["MSS"] == 1220


def test_nat66_cookie_ack_opens_the_connection_and_the_server_sees_the_clients_options():
    e = proxy_engine6()
    synack = syn(e)
    to_rs = one(cookie_ack(e, synack), 2)
    assert (to_rs[IPv6].src, to_rs[IPv6].dst, to_rs[IPv6].hlim) == (CLIENT6, RIP6, 63)
    assert (to_rs[TCP].dport, str(to_rs[TCP].flags), to_rs[TCP].seq) == (8080, "S", CISN)
    o = opts(to_rs)
    assert o["MSS"] == 1440 and "SAckOK" in o and o["WScale"] == 7 and o["Timestamp"] == (5001, 0)
    (conn,) = e.conns.conns()
    assert conn.in_flow.flags & F_ENGINE_ONLY and conn.out_flow.flags & F_ENGINE_ONLY
    # The real server's SYN-ACK is consumed; the held ACK with its request goes to it instead.
    replay = one(server(e, flags="SA", seq=RISN, options=RS_OPTS), 2)
    assert (replay[IPv6].src, replay[IPv6].dst) == (CLIENT6, RIP6)
    assert (replay[TCP].seq, replay[TCP].ack, bytes(replay[TCP].payload)) == (CISN + 1, RISN + 1, REQUEST)
    assert opts(replay)["Timestamp"] == (5001, 90000)
    assert conn.state_name() == "ESTABLISHED"
    # Shifting both ways: the server's numbers into the cookie's, the client's acks into the server's.
    cookie, our_ts = synack[TCP].seq, opts(synack)["Timestamp"][0]
    data = one(server(e, flags="PA", seq=RISN + 1, ack=CISN + 1 + len(REQUEST), payload=b"HTTP/1.0 200",
                      options=[("NOP", None), ("NOP", None), ("Timestamp", (90010, 5001))]), 1)
    assert (data[IPv6].src, data[IPv6].dst, data[TCP].sport) == (VIP6, CLIENT6, 80)
    assert data[TCP].seq == cookie + 1 and opts(data)["Timestamp"] == ((our_ts + 10) & 0xFFFFFFFF, 5001)
    sack = [("NOP", None), ("NOP", None), ("SAck", (cookie + 201, cookie + 301))]
    back = one(client(e, seq=CISN + 1 + len(REQUEST), ack=cookie + 101, options=sack, now=NOW + 1), 2)
    assert back[TCP].ack == RISN + 101 and dict(back[TCP].options)["SAck"] == (RISN + 201, RISN + 301)


def test_a_held_ack_with_an_extension_header_is_replayed_whole():
    e = proxy_engine6()
    synack = syn(e)
    one(cookie_ack(e, synack, ext=IPv6ExtHdrDestOpt()), 2)
    replay = one(server(e, flags="SA", seq=RISN, options=RS_OPTS), 2)
    assert IPv6ExtHdrDestOpt in replay and bytes(replay[TCP].payload) == REQUEST
    assert replay[TCP].ack == RISN + 1


def test_bad_stale_and_ipv4_cookies_are_refused_over_ipv6():
    e = proxy_engine6()
    cookie = syn(e)[TCP].seq  # MSS 1440: index 2 of the IPv6 table
    assert client(e, ack=cookie + 3) == []  # as cookie + 2 it would say index 4: no such MSS
    assert client(e, ack=cookie + 1, now=NOW + 180) == []
    # the same cookie for the client's IPv4 address (another tuple) is not this one's
    v4 = e.synproxy.cookies.make(bytes(4) + bytes(4) + TUPLE6[32:], CISN, 1460, NOW)[0]
    assert client(e, ack=v4 + 1) == []
    assert e.drops["synproxy_bad_cookie"] == 3 and len(e.conns) == 0


def test_a_server_reset_during_setup_reaches_the_ipv6_client_in_its_numbering():
    e = proxy_engine6()
    synack = syn(e)
    one(cookie_ack(e, synack, payload=b""), 2)
    rst = one(server(e, flags="RA", seq=0, ack=CISN + 1), 1)
    assert (rst[IPv6].src, rst[IPv6].dst, str(rst[TCP].flags)) == (VIP6, CLIENT6, "RA")
    assert rst[TCP].seq == synack[TCP].seq + 1


def test_a_retransmitted_server_syn_ack_is_acknowledged_again_over_ipv6():
    e = proxy_engine6()
    one(cookie_ack(e, syn(e)), 2)
    one(server(e, flags="SA", seq=RISN, options=RS_OPTS), 2)
    ack = one(server(e, flags="SA", seq=RISN, options=RS_OPTS, now=NOW + 1), 2)
    assert (ack[IPv6].src, ack[IPv6].dst, str(ack[TCP].flags)) == (CLIENT6, RIP6, "A")
    assert (ack[TCP].seq, ack[TCP].ack) == (CISN + 1, RISN + 1)


def test_fullnat6_proxied_connection_sends_toa_from_the_local_address():
    e = proxy_engine6(Method.FULLNAT)
    synack = syn(e)
    to_rs = one(cookie_ack(e, synack), 2)
    assert (to_rs[IPv6].src, to_rs[IPv6].dst, str(to_rs[TCP].flags)) == (LIP6, RIP6, "S")
    lport = to_rs[TCP].sport
    replay = one(server(e, flags="SA", seq=RISN, options=RS_OPTS, dst=LIP6, dport=lport), 2)
    toa = [v for k, v in replay[TCP].options if k == 254]
    assert toa and toa[0] == CPORT.to_bytes(2, "big") + pack_ip(CLIENT6)
    assert replay[TCP].ack == RISN + 1 and bytes(replay[TCP].payload) == REQUEST
    data = one(server(e, flags="PA", seq=RISN + 1, ack=CISN + 1 + len(REQUEST), payload=b"ok", dst=LIP6,
                      dport=lport, options=[("NOP", None), ("NOP", None), ("Timestamp", (90010, 5001))]), 1)
    assert (data[IPv6].src, data[IPv6].dst, data[TCP].dport) == (VIP6, CLIENT6, CPORT)
    assert data[TCP].seq == synack[TCP].seq + 1


def test_nat64_proxied_connection_opens_to_the_ipv4_server():
    e = nat64_engine()
    synack = syn(e)
    to_rs = one(cookie_ack(e, synack), 2)
    assert to_rs.type == 0x0800 and (to_rs[IP].src, to_rs[IP].dst, str(to_rs[TCP].flags)) == (LIP4, RIP4, "S")
    assert to_rs[TCP].seq == CISN and opts(to_rs)["MSS"] == 1440
    lport = to_rs[TCP].sport
    reply = Ether(src=RS4_MAC, dst=DIP_MAC) / IP(src=RIP4, dst=LIP4) / TCP(
        sport=8080, dport=lport, flags="SA", seq=RISN, ack=CISN + 1, options=RS_OPTS)
    replay = one(e.process(frame(reply), 2, NOW + 0.2), 2)
    assert (replay[IP].src, replay[IP].dst) == (LIP4, RIP4) and replay[TCP].ack == RISN + 1
    assert bytes(replay[TCP].payload).endswith(REQUEST)  # after the TOA option: the request, held till now
    data = one(e.process(frame(Ether(src=RS4_MAC, dst=DIP_MAC) / IP(src=RIP4, dst=LIP4) / TCP(
        sport=8080, dport=lport, flags="PA", seq=RISN + 1, ack=CISN + 1 + len(REQUEST)) / Raw(b"ok")), 2, NOW + 0.3), 1)
    assert data.type == 0x86DD and (data[IPv6].src, data[IPv6].dst, data[TCP].dport) == (VIP6, CLIENT6, CPORT)
    assert data[TCP].seq == synack[TCP].seq + 1 and bytes(data[TCP].payload) == b"ok"


def test_an_ipv6_dr_real_server_cannot_be_proxied():
    e = proxy_engine6(Method.ROUTE)
    assert cookie_ack(e, syn(e)) == []
    assert e.drops["synproxy_no_replies"] == 1
