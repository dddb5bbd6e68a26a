"""A real server deleted and added again comes back with its counters, as from the kernel's dest_trash
(ip_vs_trash_get_dest): after -d/-a, -C or a reload, lc/wlc/sed see what the kernel's would."""

from __future__ import annotations

from scapy.layers.inet import TCP

from pylvs.engine.services import RealServer, VirtualService, pack_ip
from pylvs.engine.table import TRASH_PERIOD
from tests.unit.director import RIPS, VIP, frame, from_client, make_engine


def connect(engine, sport: int) -> None:
    engine.process(frame(from_client(TCP(sport=sport, dport=80, flags="S"))), 1, 1.0)


def counts(dest) -> tuple[int, int, int]:
    return dest.activeconns, dest.inactconns, dest.stats.conns


def test_a_deleted_real_server_added_again_keeps_its_counters_and_connections():
    engine = make_engine(rips=RIPS[:1], scheduler="lc")
    svc = next(iter(engine.table))
    (dest,) = svc.dests
    for sport in range(40000, 40003):
        connect(engine, sport)
    before = counts(dest)
    assert sum(before[:2]) == 3 and before[2] == 3
    engine.table.del_dest(svc, dest.addr, dest.port)
    again = engine.table.add_dest(svc, RealServer(pack_ip(RIPS[0]), 8080, weight=5, method=dest.method))
    assert again is dest and counts(again) == before and again.weight == 5 and again.available
    # Its connections forward again (the kernel's dest is available again).
    out = engine.process(frame(from_client(TCP(sport=40000, dport=80, flags="A"))), 1, 2.0)
    assert len(out) == 1


def test_a_flush_and_the_same_table_again_keep_the_counters():
    engine = make_engine(rips=RIPS[:2], scheduler="lc")
    svc = next(iter(engine.table))
    for sport in range(40000, 40004):
        connect(engine, sport)
    before = {d.addr: counts(d) for d in svc.dests}
    assert sum(c[2] for c in before.values()) == 4
    method = svc.dests[0].method
    engine.table.flush()  # lvsadm -C
    svc = engine.table.add_service(VirtualService(6, pack_ip(VIP), 80, "lc"))
    for rip in reversed(RIPS[:2]):
        engine.table.add_dest(svc, RealServer(pack_ip(rip), 8080, method=method))
    assert {d.addr: counts(d) for d in svc.dests} == before


def test_an_idle_trashed_server_is_forgotten_after_the_trash_period():
    engine = make_engine(rips=RIPS[:1])
    svc = next(iter(engine.table))
    (dest,) = svc.dests
    connect(engine, 40000)
    engine.table.del_dest(svc, dest.addr, dest.port)
    engine.tick(1.0 + 61)  # its connection (SYN_RECV, 60 s) expires
    engine.tick(70.0)      # idle from here
    engine.tick(70.0 + TRASH_PERIOD + 1)
    fresh = engine.table.add_dest(svc, RealServer(pack_ip(RIPS[0]), 8080, method=dest.method))
    assert fresh is not dest and counts(fresh) == (0, 0, 0)
