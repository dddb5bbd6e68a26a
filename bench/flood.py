"""Legitimate request rate under a SYN flood: nftables DNAT, pylvs NAT, and pylvs NAT with the SYN proxy.

`python3 bench/run.py --flood [--flood-syns N] [--flood-rate R] [--modes ...]`. Each mode gets a fresh NAT
lab; wrk opens a new connection per request (Connection: close) first alone (the baseline), then beside a
bounded flood of spoofed SYNs from 198.18.0.0/15 (pylvs.lab.synflood, N SYNs at R per second, wrk for
as long). The client namespace holds those sources as local addresses, so it answers the SYN-ACKs they
get with a RST, as hosts that sent nothing do. Reported: requests per second and errors with and
without the flood, the load balancer's CPU, and the state the flood left behind (lvsd's connection
entries; the director's conntrack entries for nftables, whose kernel has SYN cookies only for its own
sockets: the real servers' kernels answer the flood there).
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import asdict, dataclass

from benchlab import BenchLab, http_check
from loads import WrkResult, run_wrk
from modes import Mode, NftablesMode, PylvsMode

from pylvs.lab.topology import CLIENT, VIP

SOURCES = "198.18.0.0/15"


class PylvsSynproxyMode(PylvsMode):
    """pylvs NAT with the SYN proxy on the HTTP service (lvsadm -j enable)."""

    name = "pylvs-synproxy"

    def configure(self, lab: BenchLab) -> None:
        super().configure(lab)
        lab.lvsadm("-E", "-t", f"{VIP}:80", "-s", "rr", "-j", "enable")


FLOOD_MODES: tuple[type[Mode], ...] = (NftablesMode, PylvsMode, PylvsSynproxyMode)


@dataclass
class FloodRun:
    mode: str
    syns_sent: int = 0
    flood_seconds: float = 0.0
    baseline: WrkResult | None = None
    under_flood: WrkResult | None = None
    entries_after: int | None = None  # lvsd's connection entries, or the director's conntrack entries
    error: str = ""


def state_entries(lab: BenchLab, mode: Mode) -> int | None:
    if mode.uses_lvsd:
        out = lab.lvsadm("-L", "-n", "-c").stdout
        return sum(1 for line in out.splitlines() if line.startswith(("TCP", "UDP")))
    r = lab.net.exec("director", "sysctl", "-n", "net.netfilter.nf_conntrack_count", check=False)
    return int(r.stdout) if r.returncode == 0 and r.stdout.strip().isdigit() else None


def measure(cls: type[Mode], syns: int, rate: int, log) -> FloodRun:
    mode = cls()
    run = FloodRun(cls.name)
    seconds = max(2, round(syns / rate))
    lab = mode.make_lab()
    try:
        lab.build()
        mode.setup(lab)
        http_check(lab, mode.http_url(lab))
        lab.net.ip("director", "route", "add", SOURCES, "via", CLIENT)
        lab.net.ip("client", "route", "add", "local", SOURCES, "dev", "lo")
        url = mode.http_url(lab)
        run.baseline = run_wrk(lab.net, url, seconds, False, lb_pid=mode.pid)
        log(f"{run.mode}: {run.baseline.rps} req/s without a flood")
        flood = lab.net.popen("client", sys.executable, "-m", "pylvs.lab.synflood", VIP, "80", str(syns), str(rate),
                              SOURCES, log="flood.log")
        run.under_flood = run_wrk(lab.net, url, seconds, False, lb_pid=mode.pid)
        flood.wait(seconds + 30)
        with open(os.path.join(lab.net.tmp, "flood.log")) as f:
            sent, took = f.read().split()
        run.syns_sent, run.flood_seconds = int(sent), float(took)
        run.entries_after = state_entries(lab, mode)
        log(f"{run.mode}: {run.under_flood.rps} req/s beside {run.syns_sent} spoofed SYNs, "
            f"errors {run.under_flood.error_total}, entries {run.entries_after}")
        mode.stop(lab)
    except Exception as exc:  # one mode's failure must not cost the others' results
        run.error = f"{type(exc).__name__}: {exc}"
        log(f"{run.mode}: FAILED: {exc}")
    finally:
        lab.down()
    return run


def render(runs: list[FloodRun]) -> str:
    head = f"{'mode':<16} {'req/s alone':>12} {'req/s flood':>12} {'ratio':>6} {'errors':>7} {'LB core':>7} " \
           f"{'SYNs':>7} {'entries':>8}"
    lines = [head, "-" * len(head)]
    for r in runs:
        if r.error:
            lines.append(f"{r.mode:<16} failed: {r.error}")
            continue
        base, flood = r.baseline, r.under_flood
        ratio = flood.rps / base.rps if base.rps else 0.0
        core = flood.cpu.lb_core_pct if flood.cpu else None
        cpu = "-" if core is None else f"{core:.0f}%"
        lines.append(f"{r.mode:<16} {base.rps:>12.0f} {flood.rps:>12.0f} {ratio:>6.2f} {flood.error_total:>7} "
                     f"{cpu:>7} {r.syns_sent:>7} {'-' if r.entries_after is None else r.entries_after:>8}")
    return "\n".join(lines)


def run_flood(modes: list[str], syns: int, rate: int, results_dir, log) -> int:
    known = {m.name: m for m in FLOOD_MODES}
    chosen = [known[name] for name in modes if name in known] or list(FLOOD_MODES)
    runs = [measure(cls, syns, rate, log) for cls in chosen]
    print(render(runs))
    results_dir.mkdir(exist_ok=True)
    out = results_dir / "flood.json"
    out.write_text(json.dumps({"syns": syns, "rate": rate, "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                               "runs": [asdict(r) for r in runs]}, indent=2, default=str) + "\n")
    log(f"wrote {out}")
    return 1 if any(r.error for r in runs) else 0
