"""A new NAT connection makes the engine do the same work with 3 real servers as with 300.

bench/conn_cost.py drives whole short TCP connections through the engine; here its traffic runs under
hooks that count every Python line executed and every C function called. Past the warm-up (each
real server's first connections make its checksum deltas), a connection must cost the same at both
pool sizes: a scan of the pool, a per-destination cache that misses or any Python loop over a
structure that grows with it would add lines at 300. The scheduler's heap (C heapq) compacts at
different moments, hence the small allowance.
"""

from __future__ import annotations

import importlib.util
import sys
from collections import Counter
from pathlib import Path

import pytest

_PATH = Path(__file__).resolve().parents[2] / "bench" / "conn_cost.py"
_spec = importlib.util.spec_from_file_location("conn_cost", _PATH)
conn_cost = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(conn_cost)

CONNS = 150


def work_per_connection(n: int, offload: bool) -> tuple[float, Counter[str], object]:
    engine, addrs = conn_cost.make_engine(n, "wlc")
    load = conn_cost.Load(engine, conn_cost.Frames(addrs), offload)
    load.connections(2 * n + 100)
    counts: Counter[str] = Counter()

    def lines(frame, event, arg):
        counts[f"{frame.f_code.co_filename.rsplit('/', 1)[-1]}:{frame.f_code.co_name}"] += 1
        return lines

    def c_calls(frame, event, arg) -> None:
        if event == "c_call":
            counts[getattr(arg, "__qualname__", str(arg))] += 1

    sys.settrace(lines)
    sys.setprofile(c_calls)
    try:
        load.connections(CONNS)
    finally:
        sys.setprofile(None)
        sys.settrace(None)
    return sum(counts.values()) / CONNS, counts, engine


@pytest.mark.parametrize("offload", [False, True], ids=["python", "fast-path"])
def test_connection_work_does_not_grow_with_the_pool(offload: bool) -> None:
    small, small_counts, small_engine = work_per_connection(3, offload)
    large, large_counts, large_engine = work_per_connection(300, offload)
    for engine in (small_engine, large_engine):
        assert not engine.drops, dict(engine.drops)  # every frame forwarded
    svc = next(iter(large_engine.table))
    assert all(d.stats.conns for d in svc.dests)  # wlc spread the connections over all 300
    grown = {k: (large_counts[k] - small_counts[k]) / CONNS for k in large_counts | small_counts
             if abs(large_counts[k] - small_counts[k]) / CONNS >= 0.05}
    assert abs(large - small) < 1, (small, large, grown)
