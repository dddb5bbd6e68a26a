"""Proof that a load went the intended way: real-server access logs, link bytes, mode counters."""

from __future__ import annotations

import time
from dataclasses import dataclass

from benchlab import LabTools
from loads import IperfResult, WrkResult
from modes import Mode, check

from pylvs.lab import servers

SETTLE = 0.3  # let servers write their last log lines and the director finish its last packets


def director_link_bytes(lab: LabTools) -> int:
    """rx + tx bytes of the interface every mode's traffic must cross (NAT lab: the director's vip0)."""
    return lab.path_bytes()


@dataclass
class Snapshot:
    logs: dict[str, int]       # access-log lines per real server
    counters: dict[str, int]   # the mode's own counters
    link_bytes: int

    @classmethod
    def take(cls, lab: LabTools, mode: Mode) -> Snapshot:
        logs = {name: len(servers.access_log(lab.net, name)) for name in lab.rs_names}
        return cls(logs, mode.counters(lab), director_link_bytes(lab))

    def grown(self, later: Snapshot, key: str) -> int | None:
        if key not in later.counters:
            return None
        return later.counters[key] - self.counters.get(key, 0)

    def growth(self, later: Snapshot) -> dict[str, int]:
        """How much every counter grew, with the path interface's bytes as "path_bytes"."""
        grown = {key: value - self.counters.get(key, 0) for key, value in later.counters.items()}
        grown["path_bytes"] = later.link_bytes - self.link_bytes
        return grown


def path_name(lab: LabTools) -> str:
    return f"{lab.path_role} {lab.path_iface}"


def verify_wrk(lab: LabTools, mode: Mode, before: Snapshot, result: WrkResult, conns: int) -> list[str]:
    time.sleep(SETTLE)
    after = Snapshot.take(lab, mode)
    new = {name: servers.access_log(lab.net, name)[before.logs[name]:] for name in lab.rs_names}
    result.spread = {name: len(lines) for name, lines in new.items()}
    logged = sum(result.spread.values())
    reached = sorted(name for name, count in result.spread.items() if count)
    expected = sorted(mode.servers(lab))
    peers = sorted({addr for lines in new.values() for addr in lines})
    want = sorted(mode.peers(lab))
    shown = want[0] if len(want) == 1 else want
    checks = [
        check(result.requests <= logged <= result.requests + 2 * conns + result.error_total,
              f"{result.requests} requests by wrk, {logged} in the real servers' logs"),
        check(reached == expected, f"requests reached {reached} (expected {expected})"),
        check(peers == want, f"real servers saw the client as {peers} (expected {shown})"),
    ]
    result.lb_packets = before.grown(after, "http_pkts")
    grown = before.grown(after, "http_conns")
    if grown is not None:
        need = mode.min_http_conns(result, conns)
        checks.append(check(grown >= need, f"{mode.name} counted {grown} HTTP connections (at least {need})"))
    return checks + mode.route_checks(lab, before.growth(after), result)


def verify_iperf(lab: LabTools, mode: Mode, before: Snapshot, result: IperfResult) -> list[str]:
    time.sleep(SETTLE)
    after = Snapshot.take(lab, mode)
    carried = after.link_bytes - before.link_bytes
    checks = [check(carried >= 0.9 * result.bytes,
                    f"{path_name(lab)} carried {carried} bytes for {result.bytes} iperf3 payload bytes")]
    result.lb_packets = before.grown(after, "iperf_pkts")
    conns = before.grown(after, "iperf_conns")
    if conns is not None:
        checks.append(check(conns >= 2, f"{mode.name} counted {conns} iperf3 connections (control + data)"))
    moved = before.grown(after, "iperf_bytes")
    if moved is not None:
        checks.append(check(moved >= 0.9 * result.bytes, f"{mode.name} counted {moved} iperf3 bytes"))
    return checks + mode.route_checks(lab, before.growth(after), result)
