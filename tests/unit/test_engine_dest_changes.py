"""Removing, quiescing and overloading real servers while connections exist (ipvs.md §3.7, §3.8)."""

from __future__ import annotations

from scapy.layers.inet import IP, TCP

from pylvs.engine.services import Method, RealServer, pack_ip
from tests.unit.director import RIPS, frame, from_client, make_engine, parse


def syn(e, sport, t=0.0):
    out = e.process(frame(from_client(TCP(sport=sport, dport=80, flags="S"))), 1, t)
    return parse(out[0][1])[IP].dst if out else None


def ack(e, sport, t=0.0):
    out = e.process(frame(from_client(TCP(sport=sport, dport=80, flags="A"))), 1, t)
    return parse(out[0][1])[IP].dst if out else None


def dest(e, rip):
    return next(iter(e.table)).find_dest(pack_ip(rip), 8080)


def test_weight_zero_quiesces_new_connections_but_keeps_existing_ones():
    e = make_engine()
    first = syn(e, 1000)
    e.table.edit_dest(next(iter(e.table)), RealServer(pack_ip(first), 8080, weight=0, method=Method.MASQ))
    assert ack(e, 1000) == first  # the existing connection goes on
    assert first not in {syn(e, 2000 + i) for i in range(6)}  # no new ones


def test_deleted_real_server_drops_its_connections_by_default():
    e = make_engine()
    first = syn(e, 1000)
    svc = next(iter(e.table))
    e.table.del_dest(svc, pack_ip(first), 8080)
    assert ack(e, 1000) is None and e.drops["dest_unavailable"] == 1
    assert len(e.conns) == 1  # kept until it expires (expire_nodest_conn=0)


def test_expire_nodest_conn_reschedules_to_a_live_server():
    e = make_engine()
    e.settings.expire_nodest_conn = True
    first = syn(e, 1000)
    e.table.del_dest(next(iter(e.table)), pack_ip(first), 8080)
    assert syn(e, 1000) not in (None, first)  # the retransmitted SYN finds a new server
    assert len(e.conns) == 1


def test_upper_threshold_overloads_and_lower_threshold_releases():
    e = make_engine(rips=[RIPS[0], RIPS[1]])
    d0 = dest(e, RIPS[0])
    d0.u_threshold, d0.l_threshold = 2, 1
    picks = [syn(e, 1000 + i, t=0) for i in range(8)]
    assert picks.count(RIPS[0]) == 2 and d0.overloaded  # rr skips it once it holds 2 connections
    e.tick(70)  # every SYN_RECV connection expires (60 s): below the lower threshold again
    assert not d0.overloaded and d0.totalconns == 0
    assert RIPS[0] in {syn(e, 3000 + i, t=70) for i in range(2)}


def test_lower_threshold_defaults_to_three_quarters_of_the_upper():
    e = make_engine(rips=[RIPS[0]])
    d = dest(e, RIPS[0])
    d.u_threshold = 4
    for i in range(4):
        syn(e, 1000 + i, t=i)
    assert d.overloaded
    e.tick(60.5)  # the first connection expires: 3 left, not below 3 = 4 - 4 // 4
    assert d.totalconns == 3 and d.overloaded
    e.tick(61.5)
    assert d.totalconns == 2 and not d.overloaded
