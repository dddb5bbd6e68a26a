"""Load generators (wrk, iperf3) run in the client namespace, and CPU accounting around them.

Every run has a fixed duration and a subprocess timeout on top, so a wedged mode cannot hang the
benchmark. wrk reports through a small Lua `done()` hook that prints one JSON line (exact
microseconds instead of wrk's rounded text).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

from pylvs.lab.netns import LabError, Netns

WRK_THREADS = 2
WRK_CONNECTIONS = 50
GRACE = 30.0  # seconds a load run may exceed its duration before it is killed

WRK_REPORT_LUA = """\
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCHJSON {"requests": %d, "duration_us": %d, "bytes": %d, "connect": %d, "read": %d, "write": %d, '
    .. '"status": %d, "timeout": %d, "p50_us": %d, "p90_us": %d, "p99_us": %d, "max_us": %d, "mean_us": %.1f}\\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, latency.mean))
end
"""


# -- CPU accounting ---------------------------------------------------------------------------

CLK_TCK = os.sysconf("SC_CLK_TCK")
_HOST_FIELDS = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")


def host_cpu() -> dict[str, int]:
    """Aggregate jiffies of every CPU (the namespaces share one kernel, so this is the whole lab)."""
    with open("/proc/stat") as f:
        values = f.readline().split()[1:1 + len(_HOST_FIELDS)]
    return dict(zip(_HOST_FIELDS, (int(v) for v in values), strict=True))


def proc_cpu(pid: int | None) -> tuple[float, float] | None:
    """(user, system) CPU seconds of one process, all threads; None if there is none."""
    if pid is None:
        return None
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return None
    return int(fields[11]) / CLK_TCK, int(fields[12]) / CLK_TCK


@dataclass
class CpuUse:
    host_busy_pct: float     # of all CPUs together (100 = every core busy)
    host_softirq_pct: float
    host_system_pct: float
    host_user_pct: float
    host_steal_pct: float    # taken by the hypervisor: a sign of a noisy neighbour
    lb_core_pct: float | None = None  # the load balancer process (user + system), in % of one core
    lb_user_pct: float | None = None
    lb_sys_pct: float | None = None
    side_core_pct: float | None = None  # helper processes together (TUN decapsulators), in % of one core


class CpuMeter:
    """Host-wide CPU shares and the load balancer process's CPU between construction and `result()`."""

    def __init__(self, lb_pid: int | None, side_pids: Sequence[int] = ()) -> None:
        self.lb_pid = lb_pid
        self.side_pids = list(side_pids)
        self.host0 = host_cpu()
        self.proc0 = proc_cpu(lb_pid)
        self.side0 = [proc_cpu(pid) for pid in self.side_pids]
        self.t0 = time.monotonic()

    def result(self) -> CpuUse:
        seconds = time.monotonic() - self.t0
        host1 = host_cpu()
        delta = {k: host1[k] - self.host0[k] for k in _HOST_FIELDS}
        total = sum(delta.values()) or 1

        def pct(*keys: str) -> float:
            return round(100.0 * sum(delta[k] for k in keys) / total, 1)

        use = CpuUse(pct("user", "nice", "system", "irq", "softirq"), pct("softirq"), pct("system"),
                     pct("user", "nice"), pct("steal"))
        proc1 = proc_cpu(self.lb_pid)
        if self.proc0 is not None and proc1 is not None and seconds > 0:
            user, sys_ = (100.0 * (b - a) / seconds for a, b in zip(self.proc0, proc1, strict=True))
            use.lb_core_pct, use.lb_user_pct, use.lb_sys_pct = round(user + sys_, 1), round(user, 1), round(sys_, 1)
        if self.side_pids and seconds > 0:
            use.side_core_pct = round(100.0 * self._side_seconds() / seconds, 1)
        return use

    def _side_seconds(self) -> float:
        """CPU seconds the helper processes used since the start (those that ran throughout)."""
        total = 0.0
        for pid, start in zip(self.side_pids, self.side0, strict=True):
            end = proc_cpu(pid)
            if start is not None and end is not None:
                total += sum(end) - sum(start)
        return total


# -- wrk --------------------------------------------------------------------------------------

@dataclass
class WrkResult:
    url: str
    keepalive: bool
    requests: int
    seconds: float
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    errors: dict[str, int]
    cpu: CpuUse | None = None
    spread: dict[str, int] = field(default_factory=dict)  # requests each real server logged
    lb_packets: int | None = None  # frames the load balancer forwarded for this run, where it counts them
    checks: list[str] = field(default_factory=list)

    @property
    def error_total(self) -> int:
        return sum(self.errors.values())

    def as_dict(self) -> dict:
        return asdict(self)


def write_wrk_script(net: Netns) -> str:
    path = os.path.join(net.tmp, "wrk-report.lua")
    with open(path, "w") as f:
        f.write(WRK_REPORT_LUA)
    return path


def run_wrk(net: Netns, url: str, seconds: int, keepalive: bool, lb_pid: int | None = None,
            connections: int = WRK_CONNECTIONS, side_pids: Sequence[int] = (), threads: int = WRK_THREADS) -> WrkResult:
    script = write_wrk_script(net)
    threads = min(threads, connections)
    cmd = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency", "--timeout", "5s",
           "-s", script]
    if not keepalive:
        cmd += ["-H", "Connection: close"]
    meter = CpuMeter(lb_pid, side_pids)
    out = net.exec("client", *cmd, url, timeout=seconds + GRACE).stdout
    cpu = meter.result()
    report = _wrk_json(out)
    wall = report["duration_us"] / 1e6
    return WrkResult(
        url=url, keepalive=keepalive, requests=report["requests"], seconds=round(wall, 3),
        rps=round(report["requests"] / wall, 1) if wall else 0.0,
        p50_ms=report["p50_us"] / 1000, p90_ms=report["p90_us"] / 1000, p99_ms=report["p99_us"] / 1000,
        max_ms=report["max_us"] / 1000,
        errors={k: report[k] for k in ("connect", "read", "write", "status", "timeout")},
        cpu=cpu,
    )


def _wrk_json(out: str) -> dict:
    for line in out.splitlines():
        if line.startswith("BENCHJSON "):
            return json.loads(line.removeprefix("BENCHJSON "))
    raise LabError(f"wrk printed no report:\n{out}")


# -- iperf3 -----------------------------------------------------------------------------------

@dataclass
class IperfResult:
    target: str
    reverse: bool
    seconds: float
    gbps: float
    bytes: int
    retransmits: int | None
    cpu: CpuUse | None = None
    lb_packets: int | None = None
    checks: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)


def run_iperf(net: Netns, host: str, port: int, seconds: int, reverse: bool,
              lb_pid: int | None = None, side_pids: Sequence[int] = ()) -> IperfResult:
    cmd = ["iperf3", "-c", host, "-p", str(port), "-t", str(seconds), "-J", "--connect-timeout", "3000"]
    if reverse:
        cmd.append("-R")
    meter = CpuMeter(lb_pid, side_pids)
    result = net.exec("client", *cmd, check=False, timeout=seconds + GRACE)
    cpu = meter.result()
    try:
        report = json.loads(result.stdout)
    except ValueError:
        raise LabError(f"iperf3 {host}:{port}: no JSON report: {result.stderr.strip()}") from None
    if "error" in report:
        raise LabError(f"iperf3 {host}:{port}: {report['error']}")
    received, sent = report["end"]["sum_received"], report["end"]["sum_sent"]
    return IperfResult(
        target=f"{host}:{port}", reverse=reverse, seconds=round(received["seconds"], 3),
        gbps=round(received["bits_per_second"] / 1e9, 3), bytes=received["bytes"],
        retransmits=sent.get("retransmits"), cpu=cpu,
    )
