#!/usr/bin/env python3
"""Cost of the IPVS schedulers in pylvs: time per new connection and table (re)build time.

    python3 bench/sched_bench.py [--flows N]

For each scheduler and 1, 10 and 1000 real servers (weights 1..5, random connection counts with
active <= weight), it times schedule() over pre-built flows (random clients, 256 destination
addresses so lblc/lblcr see cache hits and misses) and update(), the rebuild that follows any
destination change.
"""

from __future__ import annotations

import argparse
import platform
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pylvs.engine.services import RealServer, VirtualService  # noqa: E402
from pylvs.sched import SCHEDULERS  # noqa: E402
from pylvs.sched.base import Flow  # noqa: E402

SIZES = (1, 10, 1000)
ORDER = ["rr", "wrr", "lc", "wlc", "sed", "nq", "fo", "ovf", "twos", "dh", "sh", "mh", "lblc", "lblcr"]


def make_service(n: int, rng: random.Random) -> VirtualService:
    dests = []
    for i in range(n):
        weight = 1 + i % 5
        dests.append(RealServer(bytes([10, 1, i >> 8, i & 0xFF]), 80, weight=weight,
                                activeconns=rng.randrange(weight + 1), inactconns=rng.randrange(50)))
    return VirtualService(6, bytes([192, 0, 2, 1]), 80, dests=dests)


def make_flows(count: int, rng: random.Random) -> list[Flow]:
    daddrs = [bytes([203, 0, 113, i]) for i in range(256)]
    return [Flow(6, rng.randbytes(4), rng.randrange(1024, 65536), rng.choice(daddrs), 80, i * 0.001)
            for i in range(count)]


def time_schedule(name: str, n: int, flows: list[Flow]) -> float:
    """Microseconds per schedule() call."""
    svc = make_service(n, random.Random(n))
    sched = SCHEDULERS[name](svc)
    schedule = sched.schedule
    for f in flows[:100]:  # warm up (and let lblc/lblcr fill part of their cache)
        schedule(svc, f)
    t = time.perf_counter()
    for f in flows:
        schedule(svc, f)
    return (time.perf_counter() - t) / len(flows) * 1e6


def time_update(name: str, n: int, budget: float = 0.3) -> float:
    """Microseconds per update() call, repeated for about `budget` seconds (at least 3 times)."""
    svc = make_service(n, random.Random(n))
    sched = SCHEDULERS[name](svc)
    runs = 0
    t0 = time.perf_counter()
    while True:
        sched.update(svc)
        runs += 1
        elapsed = time.perf_counter() - t0
        if runs >= 3 and elapsed > budget:
            return elapsed / runs * 1e6


def fmt(us: float) -> str:
    if us >= 1000:
        return f"{us / 1000:.1f} ms"
    return f"{us:.1f} µs" if us >= 1 else f"{us:.2f} µs"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--flows", type=int, default=5000, help="schedule() calls per measurement")
    args = parser.parse_args()
    flows = make_flows(args.flows, random.Random(1))

    print(f"pylvs scheduler cost — Python {platform.python_version()} on {platform.machine()}, "
          f"{args.flows} flows per point")
    head = ["scheduler"] + [f"schedule n={n}" for n in SIZES] + [f"update n={n}" for n in SIZES]
    rows = []
    for name in ORDER:
        row = [name]
        row += [fmt(time_schedule(name, n, flows)) for n in SIZES]
        row += [fmt(time_update(name, n)) for n in SIZES]
        rows.append(row)
        print(".", end="", flush=True, file=sys.stderr)
    print(file=sys.stderr)
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    print(" | ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)))
    print("-+-".join("-" * w for w in widths))
    for row in rows:
        print(" | ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))))


if __name__ == "__main__":
    main()
