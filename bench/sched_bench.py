#!/usr/bin/env python3
"""Cost of the IPVS schedulers in pylvs: time per new connection and after a destination change.

    python3 bench/sched_bench.py [--flows N] [--sizes 1,10,1000] [--schedulers wlc,mh]

For each scheduler and 1, 10 and 1000 real servers (weights 1..5, random connection counts with
active <= weight) it measures, in microseconds:

  schedule   one schedule() call over pre-built flows (random clients, 256 destination addresses so
             lblc/lblcr see cache hits and misses), connection counts left as they are; for mh also
             with connections from 1000 client addresses that come back (mh remembers their slots);
  churn      one schedule() plus what the engine does to the counters for it: the chosen server's
             new connection (inactconns += 1, conn_bound()) and an earlier connection of a random
             server closing (activeconns or inactconns -= 1, conn_unbound()); the schedulers hear
             about those through RealServer and re-file the servers before their next choice;
  add/del    adding a real server at the head of the list (or deleting it again: the runs alternate)
             followed by update(), as the service table does;
  weight     editing one real server's weight (alternating between two values), then update().

Every figure is the best of `--repeats` runs (each schedule run with clients of its own, so mh's
memo of client slots does not help), to keep other load on the machine out of it.
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


def make_flows(count: int, rng: random.Random, clients: list[bytes] | None = None) -> list[Flow]:
    daddrs = [bytes([203, 0, 113, i]) for i in range(256)]
    return [Flow(6, rng.choice(clients) if clients else rng.randbytes(4), rng.randrange(1024, 65536),
                 rng.choice(daddrs), 80, i * 0.001)
            for i in range(count)]


def best_us(runs: list[float]) -> float:
    return min(runs) * 1e6


def flows_per_run(n: int, count: int, repeats: int, clients: int = 0) -> list[list[Flow]]:
    """Flows for each run: new clients every time (no run profits from mh's memo of earlier ones),
    or, with `clients`, connections from that many client addresses, the same in every run."""
    rng = random.Random(n)
    pool = [rng.randbytes(4) for _ in range(clients)] or None
    return [make_flows(count, rng, pool) for _ in range(repeats)]


def time_schedule(name: str, n: int, runs_flows: list[list[Flow]], warmup: list[Flow] | None = None) -> float:
    """Microseconds per schedule() call, counts unchanged."""
    svc = make_service(n, random.Random(n))
    sched = SCHEDULERS[name](svc)
    schedule = sched.schedule
    for f in warmup or runs_flows[0][:100]:  # warm up (and let lblc/lblcr fill part of their cache)
        schedule(svc, f)
    runs = []
    for flows in runs_flows:
        t = time.perf_counter()
        for f in flows:
            schedule(svc, f)
        runs.append((time.perf_counter() - t) / len(flows))
    return best_us(runs)


def time_churn(name: str, n: int, runs_flows: list[list[Flow]]) -> float:
    """Microseconds per new connection: schedule() and the counter updates of one open and one close."""
    svc = make_service(n, random.Random(n))
    sched = SCHEDULERS[name](svc)
    schedule = sched.schedule
    rng = random.Random(2)
    runs = []
    for flows in runs_flows:
        victims = [rng.choice(svc.dests) for _ in flows]  # whose connection closes, drawn in advance
        t = time.perf_counter()
        for f, old in zip(flows, victims, strict=True):
            dest = schedule(svc, f)
            if dest is not None:
                dest.inactconns += 1
                dest.conn_bound()
            if old.activeconns:
                old.activeconns -= 1
            elif old.inactconns:
                old.inactconns -= 1
            old.conn_unbound()
        runs.append((time.perf_counter() - t) / len(flows))
    return best_us(runs)


def time_add_del(name: str, n: int, repeats: int) -> float:
    """Microseconds per update() after adding or deleting one real server (alternately)."""
    svc = make_service(n, random.Random(n))
    sched = SCHEDULERS[name](svc)
    extra = RealServer(bytes([10, 2, 0, 1]), 80, weight=3)
    runs = []
    for i in range(max(repeats, 2) * 2):
        t = time.perf_counter()
        if i % 2 == 0:
            svc.dests.insert(0, extra)
        else:
            svc.dests.remove(extra)
            extra.available = False
        sched.update(svc)
        runs.append(time.perf_counter() - t)
        extra.available = True
    return best_us(runs)


def time_weight(name: str, n: int, repeats: int) -> float:
    """Microseconds per update() after one real server's weight edit."""
    svc = make_service(n, random.Random(n))
    sched = SCHEDULERS[name](svc)
    dest = svc.dests[len(svc.dests) // 2]
    runs = []
    for i in range(max(repeats, 2) * 2):
        t = time.perf_counter()
        dest.weight = dest.last_weight = 7 if i % 2 == 0 else 2
        sched.update(svc)
        runs.append(time.perf_counter() - t)
    return best_us(runs)


def fmt(us: float) -> str:
    if us >= 1000:
        return f"{us / 1000:.1f} ms"
    return f"{us:.1f} µs" if us >= 1 else f"{us:.2f} µs"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--flows", type=int, default=5000, help="schedule() calls per run")
    parser.add_argument("--repeats", type=int, default=5, help="runs per figure (the best is shown)")
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)), help="real server counts")
    parser.add_argument("--schedulers", default=",".join(ORDER), help="which schedulers")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    names = args.schedulers.split(",")

    print(f"pylvs scheduler cost — Python {platform.python_version()} on {platform.machine()}, "
          f"{args.flows} flows per run, best of {args.repeats} runs")
    head = (["scheduler"] + [f"schedule n={n}" for n in sizes] + [f"churn n={n}" for n in sizes]
            + [f"add/del n={n}" for n in sizes] + [f"weight n={n}" for n in sizes])
    rows = []
    for name in names:
        row = [name]
        row += [fmt(time_schedule(name, n, flows_per_run(n, args.flows, args.repeats))) for n in sizes]
        row += [fmt(time_churn(name, n, flows_per_run(n + 1, args.flows, args.repeats))) for n in sizes]
        row += [fmt(time_add_del(name, n, args.repeats)) for n in sizes]
        row += [fmt(time_weight(name, n, args.repeats)) for n in sizes]
        rows.append(row)
        print(".", end="", flush=True, file=sys.stderr)
    if "mh" in names:  # mh hashes the client address: clients that come back find their slot memoised
        row = ["mh, 1000 returning clients"]
        for n in sizes:
            runs = flows_per_run(n + 2, args.flows, args.repeats, 1000)
            seen = list({f.saddr: f for run in runs for f in run}.values())  # every client once
            row.append(fmt(time_schedule("mh", n, runs, warmup=seen)))
        rows.append(row + [""] * (len(head) - len(row)))
    print(file=sys.stderr)
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    print(" | ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)))
    print("-+-".join("-" * w for w in widths))
    for row in rows:
        print(" | ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))))


if __name__ == "__main__":
    main()
