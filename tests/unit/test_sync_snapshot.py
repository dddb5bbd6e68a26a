"""A connection table written at a graceful stop and read back at the next start."""

from __future__ import annotations

import pytest
from scapy.layers.inet import TCP, UDP

from pylvs.sync import snapshot
from tests.unit.director import RIPS, frame, from_client, from_rs, make_engine


def established(engine, sport: int, rip: str) -> None:
    engine.process(frame(from_client(TCP(sport=sport, dport=80, flags="S"))), 1, 1.0)
    engine.process(frame(from_rs(rip, TCP(sport=8080, dport=sport, flags="SA"))), 2, 1.0)
    engine.process(frame(from_client(TCP(sport=sport, dport=80, flags="A"))), 1, 1.0)


def table(engine):
    return sorted((c.in_key, c.daddr, c.dport, c.state_name()) for c in engine.conns.conns())


def test_connections_survive_a_dump_and_a_load_into_a_fresh_engine():
    before = make_engine()
    for sport, rip in ((40000, RIPS[2]), (40001, RIPS[1]), (40002, RIPS[0])):
        established(before, sport, rip)
    after = make_engine()
    assert snapshot.load(after, snapshot.dump(before), 5.0) == 3
    assert table(after) == table(before) and len(table(after)) == 3
    # The adopted connection forwards the next packet as the old director would have.
    (out_if, out), = after.process(frame(from_client(TCP(sport=40001, dport=80, flags="A"))), 1, 6.0)
    assert out_if == 2


def test_udp_and_an_empty_table_round_trip():
    before = make_engine(proto=17)
    before.process(frame(from_client(UDP(sport=40000, dport=80))), 1, 1.0)
    after = make_engine(proto=17)
    assert snapshot.load(after, snapshot.dump(before), 2.0) == 1
    assert snapshot.load(make_engine(), snapshot.dump(make_engine()), 2.0) == 0


@pytest.mark.parametrize("data", [b"", b"garbage", snapshot.MAGIC + b"\x00\x00\x00\x09abc"])
def test_a_damaged_snapshot_is_refused(data):
    with pytest.raises(snapshot.SnapshotError):
        snapshot.load(make_engine(), data, 1.0)
