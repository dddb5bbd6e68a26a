"""The side-by-side tables: one row per metric, one column per mode, plus ratios between modes.

The NAT lab's table compares pylvs NAT and FULLNAT with nftables; the DR/TUN table compares each
method with the direct path of its own topology.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from loads import IperfResult, WrkResult
from sustained import SustainedResult


@dataclass
class ModeRun:
    """Everything one mode produced; `error` is set when the mode could not finish."""

    name: str
    iperf_up: IperfResult | None = None
    iperf_down: IperfResult | None = None
    wrk_keepalive: WrkResult | None = None
    wrk_close: WrkResult | None = None
    sustained: SustainedResult | None = None  # Connection: close for a minute, TIME_WAIT counted (sustained.py)
    checks: list[str] = field(default_factory=list)
    error: str | None = None

    def all_checks(self) -> list[str]:
        runs = (self.iperf_up, self.iperf_down, self.wrk_keepalive, self.wrk_close, self.sustained)
        return self.checks + [c for run in runs if run is not None for c in run.checks]

    def as_dict(self) -> dict[str, Any]:
        runs = {"iperf_up": self.iperf_up, "iperf_down": self.iperf_down,
                "wrk_keepalive": self.wrk_keepalive, "wrk_close": self.wrk_close}
        return {"error": self.error, "checks": self.checks,
                **{key: run.as_dict() if run else None for key, run in runs.items()},
                "sustained_close": self.sustained.as_dict() if self.sustained else None}


Getter = Callable[[ModeRun], float | None]


def _lb_cpu(attr: str) -> Getter:
    def get(run: ModeRun) -> float | None:
        result = getattr(run, attr)
        return result.cpu.lb_core_pct if result is not None and result.cpu is not None else None
    return get


def _field(attr: str, name: str) -> Getter:
    def get(run: ModeRun) -> float | None:
        result = getattr(run, attr)
        return getattr(result, name) if result is not None else None
    return get


def _host(attr: str, name: str) -> Getter:
    def get(run: ModeRun) -> float | None:
        result = getattr(run, attr)
        return getattr(result.cpu, name) if result is not None and result.cpu is not None else None
    return get


def _sustained(get: Callable[[SustainedResult], float | None]) -> Getter:
    def value(run: ModeRun) -> float | None:
        return get(run.sustained) if run.sustained is not None else None
    return value


def _share_pct(r: SustainedResult) -> float | None:
    return None if r.client_share is None else round(100 * r.client_share, 1)


SUSTAINED_METRICS: list[tuple[str, Getter]] = [
    ("Connection: close sustained, mean (conn/s)", _sustained(lambda r: r.rps)),
    ("  sustained: slowest 10-s window (conn/s)", _sustained(lambda r: r.slowest)),
    ("  sustained: TIME_WAIT on the client (% of all)", _sustained(_share_pct)),
    ("  sustained: TIME_WAIT at the end, client", _sustained(lambda r: r.samples[-1].client if r.samples else None)),
    ("  sustained: TIME_WAIT at the end, real servers",
     _sustained(lambda r: r.samples[-1].servers if r.samples else None)),
    ("  sustained: wrk socket errors", _sustained(lambda r: float(sum(r.errors.values())))),
]


def _errors(run: ModeRun) -> float | None:
    results = [r for r in (run.wrk_keepalive, run.wrk_close) if r is not None]
    return float(sum(r.error_total for r in results)) if results else None


METRICS: list[tuple[str, Getter]] = [
    ("iperf3 upload client->server (Gbit/s)", _field("iperf_up", "gbps")),
    ("iperf3 download server->client -R (Gbit/s)", _field("iperf_down", "gbps")),
    ("HTTP keep-alive (req/s)", _field("wrk_keepalive", "rps")),
    ("  keep-alive latency p50 (ms)", _field("wrk_keepalive", "p50_ms")),
    ("  keep-alive latency p99 (ms)", _field("wrk_keepalive", "p99_ms")),
    ("HTTP new connections, Connection: close (conn/s)", _field("wrk_close", "rps")),
    ("  new-connection latency p50 (ms)", _field("wrk_close", "p50_ms")),
    ("  new-connection latency p99 (ms)", _field("wrk_close", "p99_ms")),
    ("wrk socket errors (keep-alive + close)", _errors),
    *SUSTAINED_METRICS,
    ("LB process CPU, iperf3 upload (% of 1 core)", _lb_cpu("iperf_up")),
    ("LB process CPU, keep-alive (% of 1 core)", _lb_cpu("wrk_keepalive")),
    ("LB process CPU, new connections (% of 1 core)", _lb_cpu("wrk_close")),
    ("host CPU busy, keep-alive (% of all cores)", _host("wrk_keepalive", "host_busy_pct")),
    ("host softirq, keep-alive (% of all cores)", _host("wrk_keepalive", "host_softirq_pct")),
    ("host steal, keep-alive (% of all cores)", _host("wrk_keepalive", "host_steal_pct")),
]


ROUTED_METRICS: list[tuple[str, Getter]] = [
    *METRICS[:9 + len(SUSTAINED_METRICS)],
    ("LB process CPU, iperf3 upload (% of 1 core)", _lb_cpu("iperf_up")),
    ("LB process CPU, iperf3 download (% of 1 core)", _lb_cpu("iperf_down")),
    ("LB process CPU, keep-alive (% of 1 core)", _lb_cpu("wrk_keepalive")),
    ("LB process CPU, new connections (% of 1 core)", _lb_cpu("wrk_close")),
    ("RS decapsulators CPU, iperf3 upload (% of 1 core)", _host("iperf_up", "side_core_pct")),
    ("RS decapsulators CPU, iperf3 download (% of 1 core)", _host("iperf_down", "side_core_pct")),
    ("RS decapsulators CPU, keep-alive (% of 1 core)", _host("wrk_keepalive", "side_core_pct")),
    ("host CPU busy, iperf3 download (% of all cores)", _host("iperf_down", "host_busy_pct")),
    ("host CPU busy, keep-alive (% of all cores)", _host("wrk_keepalive", "host_busy_pct")),
    ("host steal, iperf3 download (% of all cores)", _host("iperf_down", "host_steal_pct")),
]


@dataclass(frozen=True)
class TableSpec:
    """Which modes are columns, which ratios (name: (numerator, denominator)) follow which column, which rows."""

    title: str
    columns: list[str]
    ratios: dict[str, tuple[str, str]]
    heads: list[str]  # modes and ratios, in print order
    metrics: list[tuple[str, Getter]]


NAT_TABLE = TableSpec(
    "NAT lab: direct path, nftables DNAT, HAProxy, pylvs NAT and FULLNAT (-bpf: with the kernel fast path; "
    "-mh: mh, scheduled in the kernel); nftables6 and pylvs6: ip6 DNAT and NAT66",
    ["direct", "nftables", "haproxy", "pylvs", "pylvs-bpf", "pylvs-bpf-mh", "fullnat", "fullnat-bpf", "nftables6",
     "pylvs6"],
    {"pylvs/nftables": ("pylvs", "nftables"), "bpf/nftables": ("pylvs-bpf", "nftables"),
     "bpf-mh/nftables": ("pylvs-bpf-mh", "nftables"),
     "fullnat/nftables": ("fullnat", "nftables"), "fnat-bpf/nftables": ("fullnat-bpf", "nftables"),
     "pylvs6/nft6": ("pylvs6", "nftables6")},
    ["direct", "nftables", "haproxy", "pylvs", "pylvs-bpf", "pylvs-bpf-mh", "fullnat", "fullnat-bpf",
     "pylvs/nftables", "bpf/nftables", "bpf-mh/nftables", "fullnat/nftables", "fnat-bpf/nftables", "nftables6",
     "pylvs6", "pylvs6/nft6"],
    METRICS,
)
ROUTED_TABLE = TableSpec(
    "DR and TUN labs: pylvs beside the direct path of the same topology (client -> router -> real server)",
    ["dr-direct", "dr", "dr-bpf", "tun-direct", "tun", "tun-bpf"],
    {"dr/direct": ("dr", "dr-direct"), "dr-bpf/direct": ("dr-bpf", "dr-direct"), "tun/direct": ("tun", "tun-direct"),
     "tun-bpf/direct": ("tun-bpf", "tun-direct")},
    ["dr-direct", "dr", "dr-bpf", "dr/direct", "dr-bpf/direct", "tun-direct", "tun", "tun-bpf", "tun/direct",
     "tun-bpf/direct"],
    ROUTED_METRICS,
)


def metrics_table(runs: dict[str, ModeRun], spec: TableSpec = NAT_TABLE) -> dict[str, dict[str, float | None]]:
    table: dict[str, dict[str, float | None]] = {}
    for label, get in spec.metrics:
        row = {name: (get(runs[name]) if name in runs else None) for name in spec.columns}
        for name, (num, den) in spec.ratios.items():
            row[name] = ratio(row.get(num), row.get(den))
        table[label] = row
    return table


def ratio(a: float | None, b: float | None) -> float | None:
    if a is None or not b:
        return None
    return round(a / b, 3)


def fmt(value: float | None) -> str:
    if value is None:
        return "-"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 100:
        return f"{value:.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.3g}" if value else "0"


def render(table: dict[str, dict[str, float | None]], errors: dict[str, str], spec: TableSpec = NAT_TABLE) -> str:
    width = max(len(label) for label in table) + 2
    widths = [max(12, len(head) + 2) for head in spec.heads]
    lines = [f"{'metric':<{width}}" + "".join(f"{h:>{w}}" for h, w in zip(spec.heads, widths, strict=True))]
    lines.append("-" * len(lines[0]))
    for label, row in table.items():
        cells = [("error" if row[head] is None and head in errors else fmt(row[head])) for head in spec.heads]
        lines.append(f"{label:<{width}}" + "".join(f"{c:>{w}}" for c, w in zip(cells, widths, strict=True)))
    return "\n".join(lines)


# -- where the load balancer's CPU goes -----------------------------------------------------------

RUN_NAMES = {"iperf_up": "iperf3 upload", "iperf_down": "iperf3 download", "wrk_keepalive": "keep-alive",
             "wrk_close": "new connections"}


def lb_detail(run: IperfResult | WrkResult) -> dict[str, float | None]:
    """CPU split of the load balancer process and, where it counts frames, the cost per frame."""
    cpu = run.cpu
    detail: dict[str, float | None] = {
        "lb_core_pct": cpu.lb_core_pct if cpu else None,
        "lb_user_pct": cpu.lb_user_pct if cpu else None,
        "lb_sys_pct": cpu.lb_sys_pct if cpu else None,
    }
    if run.lb_packets and run.seconds:
        detail["frames_per_s"] = round(run.lb_packets / run.seconds)
        if cpu and cpu.lb_core_pct is not None:
            detail["cpu_us_per_frame"] = round(cpu.lb_core_pct / 100 * run.seconds / run.lb_packets * 1e6, 2)
        if isinstance(run, IperfResult):
            detail["payload_bytes_per_frame"] = round(run.bytes / run.lb_packets)
        elif run.requests:
            detail["frames_per_request"] = round(run.lb_packets / run.requests, 2)
    return detail


def lb_details(runs: dict[str, ModeRun]) -> dict[str, dict[str, dict[str, float | None]]]:
    found: dict[str, dict[str, dict[str, float | None]]] = {}
    for name, mode_run in runs.items():
        for attr in RUN_NAMES:
            result = getattr(mode_run, attr)
            if result is not None and result.cpu is not None and result.cpu.lb_core_pct is not None:
                found.setdefault(name, {})[attr] = lb_detail(result)
    return found


def render_details(details: dict[str, dict[str, dict[str, float | None]]]) -> str:
    lines = ["load balancer process CPU (user + system, % of one core):"]
    for name, per_run in details.items():
        for attr, d in per_run.items():
            text = f"  {name:<8} {RUN_NAMES[attr]:<16} {d['lb_core_pct']:>5}% (user {d['lb_user_pct']}, " \
                   f"sys {d['lb_sys_pct']})"
            if "frames_per_s" in d:
                text += f"; {d['frames_per_s']:,} frames/s"
            if "cpu_us_per_frame" in d:
                text += f", {d['cpu_us_per_frame']} us CPU/frame"
            if "payload_bytes_per_frame" in d:
                text += f", {d['payload_bytes_per_frame']:,} payload bytes/frame"
            if "frames_per_request" in d:
                text += f", {d['frames_per_request']} frames/request"
            lines.append(text)
    return "\n".join(lines)
