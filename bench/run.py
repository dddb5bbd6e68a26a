"""Side-by-side benchmark: pylvs NAT, FULLNAT, DR and TUN against nftables, HAProxy and direct paths.

NAT lab: direct path, nftables DNAT, HAProxy, pylvs NAT and FULLNAT; over IPv6, nftables ip6 DNAT and
pylvs NAT66 (nftables6, pylvs6). DR and TUN labs: pylvs beside the direct path of the same topology
(client -> router -> real server, no director).

Run as root from anywhere:  python3 bench/run.py [--quick] [--profile] [--modes direct,pylvs,dr-direct,dr]
                            [--sustained SECONDS] [--sustained-only]
Every mode gets a freshly built lab (namespaces, nginx, iperf3), is measured with iperf3 and wrk
from the client namespace, then with a minute of Connection: close in 10-s windows with TIME_WAIT
counted on every side (sustained.py), is checked to have carried the traffic the intended way, and
is torn down again, also on errors and Ctrl-C. Results: tables on stdout and bench/results/latest.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path[:0] = [str(REPO)] if str(REPO) not in sys.path else []
# lvsd and lvsadm run as `python -m pylvs...` inside the namespaces and must find the package too
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))

from benchlab import BenchLab, LabTools, http_check  # noqa: E402
from loads import WRK_CONNECTIONS, run_iperf, run_wrk  # noqa: E402
from modes import Mode, PylvsMode  # noqa: E402
from modes_lvs import MODES  # noqa: E402
from profile_report import summarize  # noqa: E402
from report import NAT_TABLE, ROUTED_TABLE, ModeRun, lb_details, metrics_table, render, render_details  # noqa: E402
from sustained import CONNECTIONS as SUSTAINED_CONNECTIONS  # noqa: E402
from sustained import render_sustained, run_sustained  # noqa: E402
from verify import Snapshot, verify_iperf, verify_wrk  # noqa: E402

from pylvs.lab.netns import LabError  # noqa: E402

RESULTS = BENCH / "results"
TOOLS = ("ip", "nft", "nginx", "haproxy", "wrk", "iperf3", "curl", "ss")


def log(text: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


# -- one mode -------------------------------------------------------------------------------------

def measure_mode(mode: Mode, run: ModeRun, seconds: int, profile: bool, sustained: int = 0,
                 short_loads: bool = True) -> dict | None:
    """Build the lab, turn the director into `mode`, run every load into `run`, tear everything down."""
    profiled = None
    lab = mode.make_lab()
    try:
        lab.build()
        mode.setup(lab)
        run.checks = mode.static_checks(lab)
        answer = http_check(lab, mode.http_url(lab))
        log(f"{mode.name}: ready, GET {mode.http_url(lab)} -> {answer!r}")
        if short_loads:
            measure_loads(lab, mode, run, seconds)
        if sustained:
            measure_sustained(lab, mode, run, sustained)
        run.checks += mode.static_checks(lab)  # still the same director after the load
        if profile and mode.profiled and isinstance(mode, PylvsMode) and isinstance(lab, BenchLab):
            profiled = profile_keepalive(lab, mode, seconds)
        mode.stop(lab)
    except Exception as exc:  # one mode's failure must not cost the other modes' results
        run.error = f"{type(exc).__name__}: {exc}"
        log(f"{mode.name}: FAILED: {exc}")
        if mode.uses_lvsd:
            log(f"lvsd log:\n{lab.lvsd_log()[-2000:]}")
    except KeyboardInterrupt:
        run.error = "interrupted"
        raise
    finally:
        quiet_teardown(lab)
    return profiled


def measure_loads(lab: LabTools, mode: Mode, run: ModeRun, seconds: int) -> None:
    host, port = mode.iperf_target(lab)
    side = mode.side_pids(lab)
    for reverse in (False, True):
        before = Snapshot.take(lab, mode)
        duration = mode.duration("iperf_down" if reverse else "iperf_up", seconds)
        result = run_iperf(lab.net, host, port, duration, reverse, lb_pid=mode.pid, side_pids=side)
        result.checks = verify_iperf(lab, mode, before, result)
        log(f"{mode.name}: iperf3 {'download' if reverse else 'upload'} {result.gbps} Gbit/s")
        if reverse:
            run.iperf_down = result
        else:
            run.iperf_up = result
    for keepalive in (True, False):
        before = Snapshot.take(lab, mode)
        duration = mode.duration("wrk_keepalive" if keepalive else "wrk_close", seconds)
        result = run_wrk(lab.net, mode.http_url(lab), duration, keepalive, lb_pid=mode.pid, side_pids=side)
        result.checks = verify_wrk(lab, mode, before, result, WRK_CONNECTIONS)
        log(f"{mode.name}: wrk {'keep-alive' if keepalive else 'close'} {result.rps} req/s, "
            f"p50 {result.p50_ms} ms, p99 {result.p99_ms} ms, errors {result.error_total}")
        if keepalive:
            run.wrk_keepalive = result
        else:
            run.wrk_close = result


def measure_sustained(lab: LabTools, mode: Mode, run: ModeRun, seconds: int) -> None:
    """Connection: close for `seconds` (never halved), the rate per 10 s and TIME_WAIT on every side."""
    before = Snapshot.take(lab, mode)
    result = run_sustained(lab.net, mode.http_url(lab), seconds, lab.rs_names, lb_pid=mode.pid,
                           side_pids=mode.side_pids(lab))
    # each 10-s window is a wrk run of its own: the requests in flight when one stops are served, not counted
    result.checks = verify_wrk(lab, mode, before, result.total, SUSTAINED_CONNECTIONS * max(1, len(result.rates)))
    share = "-" if result.client_share is None else f"{100 * result.client_share:.1f}%"
    log(f"{mode.name}: sustained close {result.rps} conn/s (windows {', '.join(f'{r:.0f}' for r in result.rates)}), "
        f"TIME_WAIT on the client {share}, errors {sum(result.errors.values())}")
    run.sustained = result


def quiet_teardown(lab: LabTools) -> None:
    """Tear down with Ctrl-C ignored, so a second Ctrl-C cannot leave namespaces behind."""
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        lab.down()
        left = lab.net.leftovers()
        if left:
            log(f"WARNING: namespaces left behind: {left}")
    finally:
        signal.signal(signal.SIGINT, previous)


# -- profiling ------------------------------------------------------------------------------------

def profile_keepalive(lab: BenchLab, mode: PylvsMode, seconds: int) -> dict:
    """Restart lvsd under cProfile, repeat the keep-alive run, stop lvsd (SIGTERM) and read the profile."""
    lab.stop_lvsd()
    outfile = os.path.join(lab.net.tmp, "lvsd.prof")
    proc = lab.start_lvsd_profiled(outfile)
    mode.configure(lab)
    http_check(lab, mode.http_url(lab))
    result = run_wrk(lab.net, mode.http_url(lab), seconds, True, lb_pid=proc.pid)
    log(f"pylvs under cProfile: keep-alive {result.rps} req/s")
    code = lab.stop_lvsd()
    if not os.path.exists(outfile):
        raise LabError(f"cProfile wrote no profile (lvsd exit {code}): {lab.lvsd_log()[-1000:]}")
    RESULTS.mkdir(exist_ok=True)
    saved = RESULTS / "lvsd-keepalive.prof"
    shutil.copyfile(outfile, saved)
    return summarize(str(saved), result.rps, top=25)


# -- the whole run --------------------------------------------------------------------------------

def revision() -> str:
    """The pylvs code measured: commit, plus "+dirty" when pylvs/ has uncommitted changes."""
    def git(*args: str) -> str:
        result = subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True, timeout=10)
        return result.stdout.strip() if result.returncode == 0 else ""

    head = git("rev-parse", "--short", "HEAD") or "unknown"
    return head + ("+dirty" if git("status", "--porcelain", "--", "pylvs") else "")


def machine() -> dict:
    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
    model = next((line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")), "unknown")
    return {"cpus": os.cpu_count(), "cpu_model": model, "kernel": platform.release(),
            "python": platform.python_version(), "loadavg_at_start": Path("/proc/loadavg").read_text().split()[:3],
            "pylvs_revision": revision(),
            "note": "one VM; client, director and real servers are namespaces sharing the same cores"}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="3 s per load run instead of 10 s")
    p.add_argument("--duration", type=int,
                   help="seconds per load run (overrides --quick); pylvs-bpf-mh, fullnat, dr*, tun*, nftables6, "
                        "pylvs6 run every load but the iperf3 download for half of it")
    p.add_argument("--profile", action="store_true",
                   help="also run the pylvs keep-alive load with lvsd under cProfile and print the top 25 (tottime)")
    p.add_argument("--modes", default=",".join(m.name for m in MODES),
                   help="comma-separated subset of: " + ", ".join(m.name for m in MODES))
    p.add_argument("--flood", action="store_true",
                   help="instead: req/s under a bounded spoofed SYN flood (nftables, pylvs, pylvs-synproxy; "
                        "bench/flood.py)")
    p.add_argument("--flood-syns", type=int, default=20_000, help="SYNs the flood sends (default 20000)")
    p.add_argument("--flood-rate", type=int, default=5_000, help="SYNs per second (default 5000)")
    p.add_argument("--sustained", type=int, metavar="SECONDS",
                   help="seconds of the sustained Connection: close load per mode, in 10-s windows with TIME_WAIT "
                        "counted (default 60, 20 with --quick; 0 leaves it out)")
    p.add_argument("--sustained-only", action="store_true",
                   help="run only the sustained Connection: close load in each mode (no iperf3, no short wrk runs)")
    args = p.parse_args(argv)
    if args.flood:
        return args
    args.seconds = args.duration or (3 if args.quick else 10)
    if args.sustained is None:
        args.sustained = 20 if args.quick else 60
    wanted = args.modes.split(",")
    known = {m.name: m for m in MODES}
    unknown = [name for name in wanted if name not in known]
    if unknown:
        p.error(f"unknown mode(s): {', '.join(unknown)}")
    args.mode_classes = [known[name] for name in wanted]
    return args


def preflight() -> None:
    if os.geteuid() != 0:
        sys.exit("bench/run.py needs root (network namespaces, AF_PACKET, nftables)")
    missing = [tool for tool in TOOLS if shutil.which(tool) is None and not os.path.exists(f"/usr/sbin/{tool}")]
    if missing:
        sys.exit(f"missing tools: {', '.join(missing)} (apt-get install -y ...)")


def on_sigterm(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # same clean path as Ctrl-C: every finally runs


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    preflight()
    signal.signal(signal.SIGTERM, on_sigterm)
    if args.flood:
        from flood import run_flood
        chosen = [] if args.modes == ",".join(m.name for m in MODES) else args.modes.split(",")  # [] = all
        return run_flood(chosen, args.flood_syns, args.flood_rate, RESULTS, log)
    info = machine()
    log(f"{info['cpus']} CPUs, load average {' '.join(info['loadavg_at_start'])}, {args.seconds} s per load run, "
        f"pylvs {info['pylvs_revision']}")
    runs: dict[str, ModeRun] = {}
    profiled = None
    try:
        for cls in args.mode_classes:
            runs[cls.name] = ModeRun(cls.name)
            profiled = measure_mode(cls(), runs[cls.name], args.seconds, args.profile, args.sustained,
                                    not args.sustained_only) or profiled
    except KeyboardInterrupt:
        log("interrupted; labs torn down, partial results follow")
    return finish(runs, profiled, info, args)


def finish(runs: dict[str, ModeRun], profiled: dict | None, info: dict, args: argparse.Namespace) -> int:
    table = metrics_table(runs, NAT_TABLE)
    routed = metrics_table(runs, ROUTED_TABLE) if set(runs) & set(ROUTED_TABLE.columns) else None
    errors = {name: run.error for name, run in runs.items() if run.error}
    if set(runs) - set(ROUTED_TABLE.columns) or not routed:
        print(render(table, errors, NAT_TABLE))
    if routed:
        print(f"\n{ROUTED_TABLE.title}\n" + render(routed, errors, ROUTED_TABLE))
    details = lb_details(runs)
    if details:
        print("\n" + render_details(details))
    sustained = {name: run.sustained for name, run in runs.items() if run.sustained is not None}
    if sustained:
        print("\n" + render_sustained(sustained))
    failed = [f"{name}: {c}" for name, run in runs.items() for c in run.all_checks() if not c.startswith("ok")]
    for name, error in errors.items():
        print(f"\n{name} failed: {error}")
    print(f"\nchecks: {sum(len(r.all_checks()) for r in runs.values()) - len(failed)} ok, {len(failed)} failed")
    for line in failed:
        print(f"  {line}")
    if profiled:
        print(f"\nlvsd under cProfile, keep-alive: {profiled['rps']} req/s; top {len(profiled['top'])} by tottime "
              f"(total {profiled['total_s']} s):")
        print(profiled["text"])
    RESULTS.mkdir(exist_ok=True)
    document = {
        "machine": info, "seconds_per_run": args.seconds, "wrk": "-t2 -c50 --latency --timeout 5s",
        "sustained_close_seconds": args.sustained,
        "short_runs": "pylvs-bpf-mh, fullnat, dr*, tun*, nftables6, pylvs6: iperf3 download the full duration, "
                      "the other loads half of it",
        "metrics": table, "metrics_dr_tun": routed, "lb_cpu": details,
        "modes": {name: run.as_dict() for name, run in runs.items()},
        "failed_checks": failed, "profile": profiled,
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    out = RESULTS / "latest.json"
    out.write_text(json.dumps(document, indent=2) + "\n")
    log(f"wrote {out}")
    return 1 if failed or errors or len(runs) < len(args.mode_classes) else 0


if __name__ == "__main__":
    sys.exit(main())
