"""The IPVS TCP state machine, active/inactive counts and timeouts, driven by real frames."""

from __future__ import annotations

import socket

from scapy.layers.inet import TCP, UDP

from pylvs.engine import tcpstate
from tests.unit.director import RIPS, frame, from_client, from_rs, make_engine

RIP = RIPS[2]


def conn_of(engine):
    conns = engine.conns.conns()
    assert len(conns) == 1
    return conns[0]


def dest_of(engine):
    svc = next(iter(engine.table))
    return svc.find_dest(socket.inet_aton(RIP), 8080)


def client(flags, t, engine, sport=40000):
    return engine.process(frame(from_client(TCP(sport=sport, dport=80, flags=flags))), 1, t)


def server(flags, t, engine, dport=40000):
    return engine.process(frame(from_rs(RIP, TCP(sport=8080, dport=dport, flags=flags))), 2, t)


def test_handshake_data_and_close_walk_the_kernel_states():
    e = make_engine()
    client("S", 0, e)
    c, d = conn_of(e), dest_of(e)
    assert c.state == tcpstate.SYN_RECV and c.timeout == 60
    assert (d.activeconns, d.inactconns) == (1, 0)  # SYN_RECV counts as active
    server("SA", 0.1, e)
    assert c.state == tcpstate.SYN_RECV  # OUTPUT syn on sSR stays sSR
    client("A", 0.2, e)
    assert c.state == tcpstate.ESTABLISHED and c.timeout == 900
    client("FA", 5, e)
    assert c.state == tcpstate.CLOSE_WAIT and c.timeout == 60  # INPUT fin on sES
    assert (d.activeconns, d.inactconns) == (0, 1)
    server("FA", 5.1, e)
    assert c.state == tcpstate.TIME_WAIT  # OUTPUT fin on sCW
    client("A", 5.2, e)
    assert c.state == tcpstate.TIME_WAIT and c.timeout == 120


def test_rst_closes_with_the_close_timeout_and_expires_on_time():
    e = make_engine()
    client("S", 0, e)
    server("SA", 0.1, e)
    client("A", 0.2, e)
    client("R", 10.0, e)
    c = conn_of(e)
    assert c.state == tcpstate.CLOSE and c.timeout == 10
    e.tick(19.9)
    assert len(e.conns) == 1
    e.tick(20.1)  # 10 s after the RST, not 900 s after the last ESTABLISHED refresh
    assert len(e.conns) == 0
    d = dest_of(e)
    assert (d.activeconns, d.inactconns) == (0, 0)


def test_established_connection_is_refreshed_by_traffic():
    e = make_engine()
    client("S", 0, e)
    client("A", 0.1, e)
    for t in (800, 1600, 2400):
        client("A", t, e)
        e.tick(t + 1)
        assert len(e.conns) == 1
    e.tick(2400 + 900.5)
    assert len(e.conns) == 0


def test_unanswered_syn_expires_after_syn_recv_timeout():
    e = make_engine()
    client("S", 0, e)
    e.tick(59)
    assert len(e.conns) == 1
    e.tick(61)
    assert len(e.conns) == 0


def test_non_syn_without_connection_is_dropped():
    e = make_engine()
    assert client("A", 0, e) == []
    assert e.drops["no_conn"] == 1
    assert client("R", 0, e) == []


def test_new_syn_on_time_wait_connection_is_rescheduled():
    e = make_engine()
    client("S", 0, e)
    client("A", 0.1, e)
    client("F", 1, e)
    server("F", 1.1, e)
    assert conn_of(e).state == tcpstate.TIME_WAIT
    out = client("S", 2, e)  # the client reuses its port: conn_reuse_mode 1 reschedules
    c = conn_of(e)
    assert c.state == tcpstate.SYN_RECV and len(out) == 1


def test_udp_connection_is_never_active_and_times_out_after_300s():
    e = make_engine(proto=17, vport=53, rport=53)
    e.process(frame(from_client(UDP(sport=5000, dport=53))), 1, 0)
    c = conn_of(e)
    svc = next(iter(e.table))
    d = svc.find_dest(socket.inet_aton(RIP), 53)
    assert c.state_name() == "UDP" and c.timeout == 300
    assert (d.activeconns, d.inactconns) == (0, 1)
    e.tick(299)
    assert len(e.conns) == 1
    e.tick(301)
    assert len(e.conns) == 0 and d.inactconns == 0


def test_rate_estimator_follows_the_kernel_formula():
    e = make_engine()
    svc = next(iter(e.table))
    e.tick(0)
    for second in range(10):
        for i in range(100):  # 100 new connections per second
            client("S", second + i / 100, e, sport=10000 + second * 100 + i)
        e.tick(second + 1)
    cps = svc.stats.rates()[0]
    # EWMA with weight 1/4 every 2 s: after 5 periods of 200 conns, avg = 100*(1-(3/4)**5) = 76.3
    assert cps == 76
