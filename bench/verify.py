"""Proof that a load went the intended way: real-server access logs, director link bytes, mode counters."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

from benchlab import BenchLab
from loads import IperfResult, WrkResult
from modes import Mode, check

from pylvs.lab import servers

SETTLE = 0.3  # let servers write their last log lines and the director finish its last packets


def director_link_bytes(lab: BenchLab) -> int:
    """rx + tx bytes of the director's outside interface (every mode's traffic must cross it)."""
    links = json.loads(lab.net.ip("director", "-s", "-j", "link", "show", "dev", "vip0").stdout)
    stats = links[0]["stats64"]
    return int(stats["rx"]["bytes"]) + int(stats["tx"]["bytes"])


@dataclass
class Snapshot:
    logs: dict[str, int]       # access-log lines per real server
    counters: dict[str, int]   # the mode's own counters
    link_bytes: int

    @classmethod
    def take(cls, lab: BenchLab, mode: Mode) -> Snapshot:
        logs = {name: len(servers.access_log(lab.net, name)) for name in lab.rs_names}
        return cls(logs, mode.counters(lab), director_link_bytes(lab))

    def grown(self, later: Snapshot, key: str) -> int | None:
        if key not in later.counters:
            return None
        return later.counters[key] - self.counters.get(key, 0)


def verify_wrk(lab: BenchLab, mode: Mode, before: Snapshot, result: WrkResult, conns: int) -> list[str]:
    time.sleep(SETTLE)
    after = Snapshot.take(lab, mode)
    new = {name: servers.access_log(lab.net, name)[before.logs[name]:] for name in lab.rs_names}
    result.spread = {name: len(lines) for name, lines in new.items()}
    logged = sum(result.spread.values())
    reached = sorted(name for name, count in result.spread.items() if count)
    expected = sorted(mode.servers(lab))
    peers = sorted({addr for lines in new.values() for addr in lines})
    checks = [
        check(result.requests <= logged <= result.requests + 2 * conns + result.error_total,
              f"{result.requests} requests by wrk, {logged} in the real servers' logs"),
        check(reached == expected, f"requests reached {reached} (expected {expected})"),
        check(peers == [mode.peer], f"real servers saw the client as {peers} (expected {mode.peer})"),
    ]
    result.lb_packets = before.grown(after, "http_pkts")
    grown = before.grown(after, "http_conns")
    if grown is not None:
        need = conns if result.keepalive else result.requests
        checks.append(check(grown >= need, f"{mode.name} counted {grown} HTTP connections (at least {need})"))
    return checks


def verify_iperf(lab: BenchLab, mode: Mode, before: Snapshot, result: IperfResult) -> list[str]:
    time.sleep(SETTLE)
    after = Snapshot.take(lab, mode)
    carried = after.link_bytes - before.link_bytes
    checks = [check(carried >= 0.9 * result.bytes,
                    f"director vip0 carried {carried} bytes for {result.bytes} iperf3 payload bytes")]
    result.lb_packets = before.grown(after, "iperf_pkts")
    conns = before.grown(after, "iperf_conns")
    if conns is not None:
        checks.append(check(conns >= 2, f"{mode.name} counted {conns} iperf3 connections (control + data)"))
    moved = before.grown(after, "iperf_bytes")
    if moved is not None:
        checks.append(check(moved >= 0.9 * result.bytes, f"{mode.name} counted {moved} iperf3 bytes"))
    return checks
