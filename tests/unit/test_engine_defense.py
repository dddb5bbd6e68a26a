"""IPVS's memory-pressure defence (amemthresh, drop_entry, drop_packet, secure_tcp) and lvsd's --max-conns."""

from __future__ import annotations

from scapy.layers.inet import TCP

from pylvs.engine import tcpstate
from pylvs.engine.defense import DOS_TRANSITIONS, Defense
from pylvs.engine.engine import Engine, Settings
from pylvs.engine.services import Method, RealServer, VirtualService, pack_ip
from tests.unit.director import RIPS, VIP, frame, from_client, make_engine

NOW = 5000.0


def engine(**settings) -> Engine:
    template = make_engine(Method.MASQ, rips=[RIPS[0]])
    e = Engine(template.routes, Settings(**settings))
    for iface in template.interfaces.values():
        e.add_interface(iface)
    svc = e.table.add_service(VirtualService(6, pack_ip(VIP), 80, "rr"))
    e.table.add_dest(svc, RealServer(pack_ip(RIPS[0]), 8080, method=Method.MASQ))
    return e


def syn(e: Engine, cport: int, now: float = NOW, flags: str = "S"):
    return e.process(frame(from_client(TCP(sport=cport, dport=80, flags=flags, seq=1))), 1, now)


def test_max_conns_is_a_hard_cap_and_refusals_are_counted():
    e = engine(max_conns=3)
    sent = [syn(e, 1000 + i) for i in range(5)]
    assert [bool(out) for out in sent] == [True, True, True, False, False]
    assert len(e.conns) == 3 and e.drops["max_conns"] == 2


def test_drop_packet_mode_3_drops_one_in_am_droprate():
    e = engine(drop_packet=3, am_droprate=4)
    forwarded = [bool(syn(e, 2000 + i)) for i in range(8)]
    assert forwarded == [True, True, True, False] * 2
    assert e.drops["drop_packet"] == 2


def test_automatic_modes_follow_the_connection_budget():
    # 4000 free entries at 1 KiB are 1000 pages: below amemthresh (1024), so the automatic modes act.
    e = engine(max_conns=4000, drop_packet=1, drop_entry=1, secure_tcp=1)
    e.tick(NOW)
    d = e.defense
    assert (d.drop_packet, d.drop_entry, d.secure_tcp) == (2, 2, 2)
    assert d.available == 1000 and d.drop_rate == 1024 // 24 and d.transitions is DOS_TRANSITIONS
    e2 = engine(max_conns=100_000, drop_packet=1, drop_entry=1, secure_tcp=1)
    e2.tick(NOW)
    assert (e2.defense.drop_packet, e2.defense.drop_entry, e2.defense.secure_tcp) == (1, 1, 1)
    assert e2.defense.drop_rate == 0 and e2.defense.transitions is tcpstate.TRANSITIONS


def test_automatic_modes_follow_the_hosts_memory_and_return():
    d = Defense(secure_tcp=1, drop_packet=2)
    d.update(0, host_pages=100)
    assert (d.secure_tcp, d.drop_packet, d.drop_rate) == (2, 2, 1024 // (1024 - 100))
    d.update(0, host_pages=10**6)
    assert (d.secure_tcp, d.drop_packet, d.drop_rate) == (1, 1, 0)
    d.update(0, host_pages=None)  # unknown: never short
    assert d.secure_tcp == 1


def test_secure_tcp_keeps_a_client_ack_from_establishing_a_nat_connection():
    for mode, state in ((0, "ESTABLISHED"), (3, "SYN_RECV")):
        e = engine(secure_tcp=mode)
        syn(e, 3000)
        syn(e, 3000, NOW + 0.1, flags="A")
        assert e.conns.conns()[0].state_name() == state


def test_dos_table_differs_from_the_normal_one_in_the_listed_cells_only():
    changed = {(r, c) for r in range(12) for c in range(11) if DOS_TRANSITIONS[r][c] != tcpstate.TRANSITIONS[r][c]}
    assert len(changed) == 7 + 8  # the 7 single cells of ipvs.md §3.3 and IN-ONLY syn on 8 states
    assert DOS_TRANSITIONS[tcpstate.INPUT + 2][tcpstate.SYN_RECV] == tcpstate.SYN_RECV


def test_drop_entry_removes_half_open_entries_a_flood_left():
    e = engine(drop_entry=3)
    for i in range(256):
        syn(e, 10000 + i)
    assert len(e.conns) == 256
    e.tick(NOW + 1)
    dropped = e.defense.counters["dropped_entries"]
    assert 1 <= dropped <= 256 >> 5 and len(e.conns) == 256 - dropped
