#!/usr/bin/env python3
"""Does kernel scheduling pay? Sustained Connection: close through an mh NAT service, on against off.

    bench/ksched.py [--seconds 15] [--runs 3]

The NAT lab (2 nginx real servers), `lvsd --datapath bpf` with and without `--no-kernel-sched`, runs
interleaved (on, off, on, off, ...) so a change in the shared machine's load hits both alike; each run
is one window of sustained.py's load (wrk -t1 -c50 -H 'Connection: close', the client's default
sysctls) with lvsd's CPU measured. The host's load average is printed beside each run.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "bench")]

from sustained import run_sustained  # noqa: E402

from pylvs.lab.topology import VIP, NatLab  # noqa: E402


def one_run(kernel_sched: bool, seconds: int) -> tuple[float, float | None, float | None]:
    """(req/s, lvsd's CPU in % of a core, the client's share of TIME_WAIT) of one run in a fresh lab."""
    lab = NatLab(n_rs=2)
    try:
        lab.up()
        proc = lab.start_lvsd("--datapath", "bpf", *(() if kernel_sched else ("--no-kernel-sched",)))
        lab.nat_service(scheduler="mh")
        lab.curl(f"http://{VIP}/")  # neighbours learnt; the next tick publishes the real servers' hops
        time.sleep(1.5)
        result = run_sustained(lab.net, f"http://{VIP}/", seconds, lab.rs_names, lb_pid=proc.pid, window=seconds)
        return result.rps, result.cpu.lb_core_pct if result.cpu else None, result.client_share
    finally:
        lab.down()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=int, default=15)
    p.add_argument("--runs", type=int, default=3)
    args = p.parse_args()
    rates: dict[bool, list[float]] = {True: [], False: []}
    for i in range(args.runs):
        for on in (True, False):
            load = os.getloadavg()[0]
            rps, cpu, share = one_run(on, args.seconds)
            rates[on].append(rps)
            print(f"run {i + 1} kernel scheduling {'on ' if on else 'off'}: {rps:8.1f} req/s, lvsd {cpu}% of a core, "
                  f"client TIME_WAIT share {share}, load average {load:.2f}", flush=True)
    for on, values in rates.items():
        print(f"kernel scheduling {'on ' if on else 'off'}: mean {sum(values) / len(values):.1f} req/s "
              f"({', '.join(f'{v:.0f}' for v in values)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
