"""lvsd leaves the full cyclic collection to a rare pass (pylvs.io.collector): that holds only while the
engine makes no reference cycles per connection, which reference counting alone would not free."""

from __future__ import annotations

import gc
import importlib.util
from pathlib import Path

import pytest

from pylvs.io.collector import Collector

_PATH = Path(__file__).resolve().parents[2] / "bench" / "conn_cost.py"
_spec = importlib.util.spec_from_file_location("conn_cost", _PATH)
conn_cost = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(conn_cost)


def cyclic_garbage_after(conns: int, offload: bool) -> int:
    """Unreachable objects the cyclic collector finds after `conns` whole connections, expired."""
    engine, addrs = conn_cost.make_engine(3, "wlc")
    load = conn_cost.Load(engine, conn_cost.Frames(addrs), offload)
    gc.collect()
    gc.disable()
    try:
        load.connections(conns)
        engine.tick(load.now + 1000)  # every connection expires (TIME_WAIT, CLOSE: minutes at most)
        assert not len(engine.conns), "the connections did not expire"
        return gc.collect()
    finally:
        gc.enable()


@pytest.mark.parametrize("offload", [False, True], ids=["python", "fast-path"])
def test_connections_make_no_reference_cycles(offload: bool) -> None:
    few = cyclic_garbage_after(50, offload)
    many = cyclic_garbage_after(500, offload)
    # A cycle per connection would show as ten times as many; a constant (first-use caches) is allowed.
    assert many - few < 50, (few, many)


def test_collector_collects_young_cycles_at_each_tick() -> None:
    collector = Collector(now=0.0)
    try:
        assert not gc.isenabled()

        class Node:
            pass

        a, b = Node(), Node()
        a.other, b.other = b, a
        del a, b
        assert gc.get_count()[0] > 0
        collector.tick(1.0)
        assert gc.get_count()[0] == 0  # the young generations were collected
        assert collector.next_full == 600.0
        collector.tick(600.0)
        assert collector.next_full >= 1200.0
    finally:
        collector.close()
        gc.unfreeze()
    assert gc.isenabled()
