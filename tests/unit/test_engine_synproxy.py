"""The SYN proxy in the engine: cookies, the handshake and the sequence shifting, read back with scapy."""

from __future__ import annotations

import pytest
from scapy.layers.inet import IP, TCP
from scapy.packet import Raw

from pylvs.engine.flow import F_ENGINE_ONLY
from pylvs.engine.services import Method, VirtualService, ip, pack_ip
from pylvs.engine.syncookie import MSS_TABLE, SynCookies, decode_ts, encode_ts, ts_now
from pylvs.engine.synproxy import OUR_WSCALE, SETUP_QUEUE
from tests.unit.director import CLIENT, RIPS, VIP, checksums_valid, frame, from_client, from_rs, make_engine, parse

NOW = 1_000_000.0
RIP = RIPS[0]
CPORT = 40000
CISN = 1000
RISN = 3_000_000_000
REQUEST = b"GET / HTTP/1.0\r\n\r\n"
FULL_OPTS = [("MSS", 1460), ("SAckOK", b""), ("Timestamp", (5000, 0)), ("NOP", None), ("WScale", 7)]
TUPLE = pack_ip(CLIENT) + pack_ip(VIP) + CPORT.to_bytes(2, "big") + (80).to_bytes(2, "big")


def proxy_engine(method: Method = Method.MASQ):
    e = make_engine(method=method, rips=[RIP])
    svc = next(iter(e.table))
    e.table.edit_service(VirtualService(6, pack_ip(VIP), 80, "rr", synproxy=True))
    if method == Method.FULLNAT:
        e.table.add_laddr(svc, pack_ip("10.1.0.200"))
    return e


def one(out, ifindex):
    assert len(out) == 1 and out[0][0] == ifindex, out
    pkt = parse(out[0][1])
    assert checksums_valid(pkt)
    return pkt


def opts(pkt) -> dict:
    return {name: value for name, value in pkt[TCP].options if name != "NOP"}


def syn(e, options=FULL_OPTS, now=NOW, seq=CISN):
    return one(e.process(frame(from_client(TCP(sport=CPORT, dport=80, flags="S", seq=seq, options=options))),
                         1, now), 1)


def client(e, flags="A", seq=CISN + 1, ack=0, options=(), payload=b"", now=NOW + 0.1, window=502):
    l4 = TCP(sport=CPORT, dport=80, flags=flags, seq=seq, ack=ack, window=window, options=list(options))
    return e.process(frame(from_client(l4 / Raw(payload) if payload else l4)), 1, now)


def server(e, flags="A", seq=RISN + 1, ack=CISN + 1, options=(), payload=b"", now=NOW + 0.2, window=1000):
    conn = e.conns.conns()[0]
    dst, dport = (ip(conn.laddr), int.from_bytes(conn.lport, "big")) if conn.laddr else (CLIENT, CPORT)
    l4 = TCP(sport=8080, dport=dport, flags=flags, seq=seq, ack=ack, window=window, options=list(options))
    return e.process(frame(from_rs(RIP, l4 / Raw(payload) if payload else l4, dst=dst)), 2, now)


def handshake(e, options=FULL_OPTS, rs_options=None, payload=REQUEST):
    """SYN, cookie ACK (with data), the real server's SYN-ACK: returns (SYN-ACK, SYN to RS, replayed ACK)."""
    synack = syn(e, options)
    ts = opts(synack).get("Timestamp")
    ack_opts = [("NOP", None), ("NOP", None), ("Timestamp", (5001, ts[0]))] if ts else []
    to_rs = one(client(e, ack=synack[TCP].seq + 1, options=ack_opts, payload=payload), 2)
    if rs_options is None:
        rs_options = [("MSS", 1400), ("SAckOK", b""), ("Timestamp", (90000, 5001)), ("NOP", None), ("WScale", 7)]
    replay = one(server(e, flags="SA", seq=RISN, options=rs_options), 2)
    return synack, to_rs, replay


# -- cookies ------------------------------------------------------------------------------------

@pytest.mark.parametrize("mss", [536, 1000, 1300, 1439, 1440, 1460, 9000])
def test_cookie_carries_the_mss_rounded_down_to_the_table(mss):
    c = SynCookies(b"k")
    cookie, encoded = c.make(TUPLE, 12345, mss, NOW)
    assert encoded == max([m for m in MSS_TABLE if m <= mss] or [536])
    assert c.check(TUPLE, 12345, cookie, NOW) == encoded


def test_cookie_valid_for_less_than_two_minutes_and_only_for_its_connection():
    c = SynCookies(b"k")
    made = 60 * 1000.0  # the start of a minute
    cookie, mss = c.make(TUPLE, 7, 1460, made)
    assert c.check(TUPLE, 7, cookie, made + 119.9) == mss
    assert c.check(TUPLE, 7, cookie, made + 120) is None
    # As Linux's, only the hash bits are checked: the low 2 bits are the MSS index, so a nearby ISN or
    # cookie decodes to another MSS; anything else fails but for 4 in 2^24.
    assert c.check(TUPLE, 7 + 4096, cookie, made) is None  # another ISN
    assert c.check(TUPLE[:-1] + b"\x51", 7, cookie, made) is None  # another port
    assert c.check(TUPLE, 7, cookie ^ (1 << 10), made) is None
    assert c.check(TUPLE, 7, (cookie + (1 << 24)) & 0xFFFFFFFF, made) is None  # a minute from the future
    assert SynCookies(b"other").check(TUPLE, 7, cookie, made) is None


@pytest.mark.parametrize("wscale", [None, 0, 7, 14])
@pytest.mark.parametrize("sack", [False, True])
def test_timestamp_carries_wscale_and_sack_and_never_runs_ahead(wscale, sack):
    ts = encode_ts(NOW + 0.0123, wscale, sack)
    assert ts <= ts_now(NOW + 0.0123) and ts_now(NOW + 0.0123) - ts < 64
    assert decode_ts(ts) == (wscale, sack)


# -- the handshake ------------------------------------------------------------------------------

def test_syn_answered_with_a_cookie_and_no_state():
    e = proxy_engine()
    synack = syn(e)
    assert synack[IP].src == VIP and synack[IP].dst == CLIENT and synack[TCP].sport == 80
    assert synack[TCP].flags == "SA" and synack[TCP].ack == CISN + 1
    o = opts(synack)
    assert o["MSS"] == 1460 and "SAckOK" in o and o["WScale"] == OUR_WSCALE
    tsval, tsecr = o["Timestamp"]
    assert tsecr == 5000 and decode_ts(tsval) == (7, True)
    assert len(e.conns) == 0
    again = syn(e, now=NOW + 1)  # a retransmitted SYN: a fresh SYN-ACK, still nothing kept
    assert again[TCP].flags == "SA" and len(e.conns) == 0
    assert e.synproxy.counters["syn_acks"] == 2


def test_without_timestamps_no_wscale_or_sack_is_offered():
    e = proxy_engine()
    synack = syn(e, options=[("MSS", 1400), ("SAckOK", b""), ("WScale", 7)])
    assert list(opts(synack)) == ["MSS"]


def test_valid_ack_opens_the_connection_with_the_clients_options():
    e = proxy_engine()
    synack, to_rs, _ = handshake(e)
    assert to_rs[IP].src == CLIENT and to_rs[IP].dst == RIP and to_rs[TCP].dport == 8080
    assert to_rs[TCP].flags == "S" and to_rs[TCP].seq == CISN
    o = opts(to_rs)
    assert o["MSS"] == 1460 and "SAckOK" in o and o["WScale"] == 7 and o["Timestamp"] == (5001, 0)
    assert to_rs[TCP].window == 502 << 7 or to_rs[TCP].window == 0xFFFF
    (conn,) = e.conns.conns()
    assert conn.in_flow.flags & F_ENGINE_ONLY and conn.out_flow.flags & F_ENGINE_ONLY


def test_data_on_the_third_packet_reaches_the_server_after_its_syn_ack():
    e = proxy_engine()
    synack, _, replay = handshake(e)
    assert replay[TCP].flags == "PA" or replay[TCP].flags == "A"
    assert replay[TCP].seq == CISN + 1 and replay[TCP].ack == RISN + 1
    assert bytes(replay[TCP].payload) == REQUEST
    assert opts(replay)["Timestamp"] == (5001, 90000)  # the echo moved onto the server's clock
    assert e.conns.conns()[0].state_name() == "ESTABLISHED"


def test_frames_sent_during_setup_are_held_then_replayed_in_order():
    e = proxy_engine()
    synack = syn(e, options=[("MSS", 1460)])
    cookie = synack[TCP].seq
    one(client(e, ack=cookie + 1), 2)  # the SYN to the real server
    assert client(e, flags="PA", ack=cookie + 1, payload=b"one", now=NOW + 0.2) == []
    assert client(e, flags="PA", seq=CISN + 4, ack=cookie + 1, payload=b"two", now=NOW + 0.3) == []
    out = server(e, flags="SA", seq=RISN, options=[("MSS", 1460)], now=NOW + 0.4)
    sent = [parse(f) for _, f in out]
    assert [bytes(p[TCP].payload) for p in sent] == [b"", b"one", b"two"]
    assert all(p[TCP].ack == RISN + 1 and checksums_valid(p) for p in sent)


def test_setup_queue_is_bounded_and_a_late_server_gets_the_syn_again():
    e = proxy_engine()
    cookie = syn(e, options=[("MSS", 1460)])[TCP].seq
    one(client(e, ack=cookie + 1), 2)
    for i in range(SETUP_QUEUE - 1):
        assert client(e, flags="PA", ack=cookie + 1, payload=b"x", now=NOW + 0.2 + i / 100) == []
    assert client(e, flags="PA", ack=cookie + 1, payload=b"x", now=NOW + 0.5) == []
    assert e.drops["synproxy_setup"] == 1
    e2 = proxy_engine()
    cookie = syn(e2, options=[("MSS", 1460)])[TCP].seq
    one(client(e2, ack=cookie + 1), 2)
    again = one(client(e2, flags="PA", ack=cookie + 1, payload=b"x", now=NOW + 2), 2)
    assert again[TCP].flags == "S" and again[TCP].seq == CISN


def test_bad_and_stale_cookies_are_dropped_and_counted():
    e = proxy_engine()
    cookie = syn(e)[TCP].seq
    assert client(e, ack=cookie + 2) == []
    assert client(e, ack=cookie + 1, now=NOW + 180) == []
    assert client(e, ack=12345) == []
    assert e.drops["synproxy_bad_cookie"] == 3 and len(e.conns) == 0


def test_server_reset_during_setup_reaches_the_client():
    e = proxy_engine()
    cookie = syn(e)[TCP].seq
    one(client(e, ack=cookie + 1), 2)
    rst = one(server(e, flags="RA", seq=0, ack=CISN + 1), 1)
    assert rst[IP].src == VIP and rst[TCP].sport == 80 and rst[TCP].dport == CPORT
    assert rst[TCP].flags == "RA" and rst[TCP].seq == cookie + 1
    assert e.synproxy.counters["rs_resets"] == 1


# -- shifting -----------------------------------------------------------------------------------

def test_server_to_client_sequence_timestamps_and_window():
    e = proxy_engine()
    synack, _, _ = handshake(e, rs_options=[("MSS", 1460), ("SAckOK", b""), ("Timestamp", (90000, 5001)),
                                            ("NOP", None), ("WScale", 5)])
    cookie, our_ts = synack[TCP].seq, opts(synack)["Timestamp"][0]
    data = one(server(e, flags="PA", seq=RISN + 1, ack=CISN + 1 + len(REQUEST), payload=b"HTTP/1.0 200",
                      options=[("NOP", None), ("NOP", None), ("Timestamp", (90010, 5001))], window=1000), 1)
    assert data[IP].src == VIP and data[TCP].sport == 80 and data[TCP].seq == cookie + 1
    assert data[TCP].ack == CISN + 1 + len(REQUEST)
    assert opts(data)["Timestamp"] == ((our_ts + 10) & 0xFFFFFFFF, 5001)
    assert data[TCP].window == (1000 << 5) >> OUR_WSCALE
    assert bytes(data[TCP].payload) == b"HTTP/1.0 200"


def test_client_sack_edges_and_acks_move_to_the_servers_numbering():
    e = proxy_engine()
    synack, _, _ = handshake(e)
    cookie = synack[TCP].seq
    sack = [("NOP", None), ("NOP", None), ("SAck", (cookie + 201, cookie + 301))]
    out = one(client(e, seq=CISN + 1 + len(REQUEST), ack=cookie + 101, options=sack, now=NOW + 1), 2)
    assert out[TCP].ack == RISN + 101
    assert dict(out[TCP].options)["SAck"] == (RISN + 201, RISN + 301)
    assert out[TCP].seq == CISN + 1 + len(REQUEST)


def test_server_without_window_scaling_reads_unscaled_client_windows():
    e = proxy_engine()
    handshake(e, rs_options=[("MSS", 1460), ("SAckOK", b""), ("Timestamp", (90000, 5001))])
    out = one(client(e, seq=CISN + 1 + len(REQUEST), ack=0, flags="A", window=100, now=NOW + 1), 2)
    assert out[TCP].window == min(100 << 7, 0xFFFF)
    back = one(server(e, seq=RISN + 1, ack=CISN + 1, window=60000), 1)
    assert back[TCP].window == 60000 >> OUR_WSCALE


def test_retransmitted_server_syn_ack_is_acknowledged_again():
    e = proxy_engine()
    synack, _, _ = handshake(e)
    ack = one(server(e, flags="SA", seq=RISN, now=NOW + 1,
                     options=[("MSS", 1400), ("SAckOK", b""), ("Timestamp", (91000, 5001))]), 2)
    assert ack[TCP].flags == "A" and ack[TCP].seq == CISN + 1 and ack[TCP].ack == RISN + 1


def test_fullnat_sends_toa_with_the_replayed_ack_and_stays_engine_only():
    e = proxy_engine(Method.FULLNAT)
    _, to_rs, replay = handshake(e)
    assert to_rs[IP].src == "10.1.0.200" and to_rs[TCP].flags == "S"
    toa = [v for k, v in replay[TCP].options if k == 254]
    assert toa and toa[0][2:] == pack_ip(CLIENT) and replay[TCP].ack == RISN + 1
    assert bytes(replay[TCP].payload) == REQUEST
    (conn,) = e.conns.conns()
    assert conn.in_flow.flags & F_ENGINE_ONLY and conn.out_flow.flags & F_ENGINE_ONLY


def test_dr_real_server_cannot_be_proxied():
    e = proxy_engine(Method.ROUTE)
    cookie = syn(e)[TCP].seq
    assert client(e, ack=cookie + 1) == []
    assert e.drops["synproxy_no_replies"] == 1


def test_proxied_connections_are_not_synced_their_deltas_have_no_place_in_the_message():
    from pylvs.sync.master import SyncMaster

    e = proxy_engine()
    handshake(e)
    sent: list[bytes] = []
    master = SyncMaster(sent.append)
    master.add(e.conns.conns()[0])
    master.flush()
    assert sent == [] and master.stats["skipped_synproxy"] == 1


def test_proxy_protocol_shift_composes_with_the_proxys():
    e = proxy_engine(Method.FULLNAT)
    e.table.edit_service(VirtualService(6, pack_ip(VIP), 80, "rr", synproxy=True, proxy_protocol="v2"))
    synack, _, replay = handshake(e)
    cookie, header = synack[TCP].seq, 16 + 12
    assert opts(synack)["MSS"] == 1460 - header  # room for the header in front of the first data
    payload = bytes(replay[TCP].payload)
    assert payload.startswith(b"\r\n\r\n\x00\r\nQUIT\n") and payload[header:] == REQUEST
    assert replay[TCP].seq == CISN + 1 and replay[TCP].ack == RISN + 1
    back = one(server(e, flags="PA", seq=RISN + 1, ack=CISN + 1 + header + len(REQUEST), payload=b"ok",
                      options=[("NOP", None), ("NOP", None), ("Timestamp", (90010, 5001))]), 1)
    assert back[TCP].seq == cookie + 1 and back[TCP].ack == CISN + 1 + len(REQUEST)


def test_partial_checksum_frames_are_shifted_and_finish_right():
    from pylvs.packet import vnet
    from tests.unit.test_engine_nat import complete_partial, pseudo_sum

    e = proxy_engine()
    synack, _, _ = handshake(e)
    cookie = synack[TCP].seq
    sack = [("NOP", None), ("NOP", None), ("SAck", (cookie + 201, cookie + 301))]
    pkt = from_client(TCP(sport=CPORT, dport=80, flags="PA", seq=CISN + 1 + len(REQUEST), ack=cookie + 101,
                          options=sack) / Raw(b"more"))
    pkt = pkt.__class__(bytes(pkt))
    pkt[TCP].chksum = pseudo_sum(CLIENT, VIP, 6, pkt[IP].len - 20)
    buf = frame(pkt, flags=vnet.F_NEEDS_CSUM, csum_start=34, csum_offset=16)
    (ifindex, out), = e.process(buf, 1, NOW + 1)
    assert ifindex == 2 and vnet.unpack(out)[0] & vnet.F_NEEDS_CSUM
    res = parse(out)
    assert res[TCP].ack == RISN + 101 and dict(res[TCP].options)["SAck"] == (RISN + 201, RISN + 301)
    assert checksums_valid(res.__class__(complete_partial(res)))


def test_sack_edges_at_odd_offsets_keep_a_complete_checksum_right():
    e = proxy_engine()
    synack, _, _ = handshake(e)
    cookie = synack[TCP].seq
    sack = [("NOP", None), ("SAck", (cookie + 201, cookie + 301, cookie + 401, cookie + 501))]
    out = one(client(e, seq=CISN + 1 + len(REQUEST), ack=cookie + 101, options=sack, now=NOW + 1), 2)
    assert dict(out[TCP].options)["SAck"] == (RISN + 201, RISN + 301, RISN + 401, RISN + 501)
