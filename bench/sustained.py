"""Sustained Connection: close: wrk back to back in 10-s windows, with TIME_WAIT counted on every side.

A short Connection: close run cannot show what issue 19 found: through a director that lets the
client close first, the client keeps every TIME_WAIT, runs out of ephemeral ports after a few
seconds and its rate collapses. So this load runs for a minute (`--sustained`), as consecutive wrk
runs of WINDOW seconds (the rate of each window is reported, the slowest beside the mean), with the
client's default sysctls (ip_local_port_range back to Linux's default, tcp_tw_reuse as the kernel
has it), and counts the sockets in TIME_WAIT in the client's, the real servers' and the director's
namespaces after every window: only those created since the load began (their timer says so; Linux
keeps TIME_WAIT for TIME_WAIT_SECONDS), so earlier loads do not count. `client_share` is the share
of them on the client: with nftables DNAT or IPVS the real servers close first and hold nearly all.
"""

from __future__ import annotations

import re
import time
from dataclasses import asdict, dataclass, field

from loads import CpuMeter, CpuUse, WrkResult, run_wrk

from pylvs.lab.netns import Netns

WINDOW = 10               # seconds per wrk run, and per reported rate
TIME_WAIT_SECONDS = 60    # TCP_TIMEWAIT_LEN: fixed in Linux
DEFAULT_PORT_RANGE = "32768 60999"  # Linux's default net.ipv4.ip_local_port_range
CONNECTIONS = 50
THREADS = 1               # as issue 19 ran it: wrk -t1 -c50 -H 'Connection: close'
_TIMER = re.compile(r"timer:\(timewait,([^,]+),")
_PART = re.compile(r"(\d+)(min|sec|ms)")
_UNIT = {"min": 60.0, "sec": 1.0, "ms": 0.001}


def timewait_left(line: str) -> float | None:
    """Seconds a TIME_WAIT socket of `ss -tano` output still has, or None if the line has no such timer."""
    m = _TIMER.search(line)
    if m is None:
        return None
    return sum(int(n) * _UNIT[unit] for n, unit in _PART.findall(m.group(1)))


def count_time_wait(net: Netns, role: str, since: float) -> int:
    """Sockets in TIME_WAIT in `role`'s namespace that entered it in the last `since` seconds."""
    out = net.exec(role, "ss", "-Htano", "state", "time-wait", check=False, timeout=30).stdout
    newest_left = TIME_WAIT_SECONDS - since - 1.0  # older ones have less left (1 s: the timer's rounding)
    return sum(1 for line in out.splitlines() if (left := timewait_left(line)) is not None and left >= newest_left)


@dataclass
class TimeWaitSample:
    at: float       # seconds since the load began
    client: int
    servers: int    # every real server together
    director: int   # a proxy's own sockets (HAProxy); 0 for a director that forwards


@dataclass
class SustainedResult:
    url: str
    window: int
    rates: list[float]                # req/s of each window, in order
    requests: int
    seconds: float
    errors: dict[str, int]
    samples: list[TimeWaitSample]
    port_range: str
    tw_reuse: str
    cpu: CpuUse | None = None
    total: WrkResult | None = None    # the windows together, for the route checks (verify_wrk)
    checks: list[str] = field(default_factory=list)

    @property
    def rps(self) -> float:
        return round(self.requests / self.seconds, 1) if self.seconds else 0.0

    @property
    def slowest(self) -> float | None:
        return min(self.rates) if self.rates else None

    @property
    def client_share(self) -> float | None:
        """Of the TIME_WAIT sockets at the end, the share on the client (0.0 - 1.0)."""
        if not self.samples:
            return None
        last = self.samples[-1]
        total = last.client + last.servers + last.director
        return round(last.client / total, 4) if total else None

    def as_dict(self) -> dict:
        d = asdict(self)
        d.update(rps=self.rps, slowest=self.slowest, client_share=self.client_share)
        return d


def run_sustained(net: Netns, url: str, seconds: int, rs_names: list[str], lb_pid: int | None = None,
                  side_pids: tuple[int, ...] | list[int] = (), window: int = WINDOW) -> SustainedResult:
    """wrk Connection: close for `seconds` (whole windows), TIME_WAIT counted after each window."""
    net.sysctl("client", "net.ipv4.ip_local_port_range", DEFAULT_PORT_RANGE)
    port_range = net.exec("client", "sysctl", "-n", "net.ipv4.ip_local_port_range").stdout.split()
    tw_reuse = net.exec("client", "sysctl", "-n", "net.ipv4.tcp_tw_reuse").stdout.strip()
    windows = max(1, -(-seconds // window))
    meter = CpuMeter(lb_pid, side_pids)
    start = time.monotonic()
    runs: list[WrkResult] = []
    samples: list[TimeWaitSample] = []
    for _ in range(windows):
        runs.append(run_wrk(net, url, window, keepalive=False, connections=CONNECTIONS, threads=THREADS))
        since = time.monotonic() - start
        samples.append(TimeWaitSample(
            round(since, 1), count_time_wait(net, "client", since),
            sum(count_time_wait(net, name, since) for name in rs_names), count_time_wait(net, "director", since)))
    cpu = meter.result()
    requests = sum(r.requests for r in runs)
    wall = sum(r.seconds for r in runs)
    errors = {k: sum(r.errors[k] for r in runs) for k in runs[0].errors}
    total = WrkResult(url=url, keepalive=False, requests=requests, seconds=round(wall, 3),
                      rps=round(requests / wall, 1) if wall else 0.0,
                      p50_ms=max(r.p50_ms for r in runs), p90_ms=max(r.p90_ms for r in runs),
                      p99_ms=max(r.p99_ms for r in runs), max_ms=max(r.max_ms for r in runs), errors=errors, cpu=cpu)
    return SustainedResult(url, window, [r.rps for r in runs], requests, round(wall, 3), errors, samples,
                           " ".join(port_range), tw_reuse, cpu, total)


def render_sustained(results: dict[str, SustainedResult]) -> str:
    """Per mode: the rate of every window and TIME_WAIT client / real servers (/ director) after it."""
    lines = [f"sustained Connection: close (wrk -t{THREADS} -c{CONNECTIONS}, client's default sysctls), "
             "per window: conn/s [TIME_WAIT client/servers(/director)]"]
    for name, r in results.items():
        cells = []
        for rate, s in zip(r.rates, r.samples, strict=True):
            tw = f"{s.client}/{s.servers}" + (f"/{s.director}" if s.director else "")
            cells.append(f"{rate:,.0f} [{tw}]")
        share = "-" if r.client_share is None else f"{100 * r.client_share:.1f}%"
        lines.append(f"  {name:<12} mean {r.rps:,.0f}, slowest {r.slowest or 0:,.0f}; TIME_WAIT on the client: "
                     f"{share} (port range {r.port_range}, tcp_tw_reuse {r.tw_reuse})")
        lines.append("    " + "  ".join(cells))
    return "\n".join(lines)
