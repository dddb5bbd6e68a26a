"""The health runtime's state, pure: real servers alive or not, weights, quorum, sorry server.

This is keepalived's ipwrapper (reference §3) without I/O: every event returns `Effects` (the
control requests for lvsd, the log lines, the scripts to run, the FIFO lines) and the caller
carries them out. What lvsd should hold is always derived from the state (`desired`) and diffed
against what it was told (`installed`), so quorum swaps, inhibited servers and a sorry server
that shares an address with a real server all come out as minimal, ordered requests.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from pylvs.health.fsm import CheckerFSM, Outcome
from pylvs.health.messages import Target, checker_target, down_message, up_message
from pylvs.keepalived.errors import Diagnostics
from pylvs.keepalived.ipvs import (
    ServiceSpec,
    Table,
    dest_diff,
    dest_key,
    dest_object,
    ident,
    service_object,
    supported_specs,
    table_diff,
)
from pylvs.keepalived.model import MAX_WEIGHT, Checker, Config, HttpCheck, RealServer, Script, VirtualServer
from pylvs.keepalived.names import fifo_rs_line, fifo_vs_line, format_rs, format_vs

INFO, WARNING = logging.INFO, logging.WARNING


def real_weight(weight: int) -> int:
    """keepalived's real_weight(): effective weights are clamped to [0, INT32_MAX]."""
    return max(0, min(MAX_WEIGHT, weight))


@dataclass
class Effects:
    requests: list[dict[str, Any]] = field(default_factory=list)
    logs: list[tuple[int, str]] = field(default_factory=list)
    scripts: list[tuple[Script, str]] = field(default_factory=list)  # (script, why)
    fifo: list[str] = field(default_factory=list)

    def log(self, message: str, level: int = INFO) -> None:
        self.logs.append((level, message))

    def extend(self, other: Effects) -> None:
        self.requests += other.requests
        self.logs += other.logs
        self.scripts += other.scripts
        self.fifo += other.fifo

    @property
    def messages(self) -> list[str]:
        return [m for _, m in self.logs]


@dataclass
class Result:
    """One check's outcome; `weight` is a dynamic weight delta (MISC dynamic, FILE_CHECK)."""

    ok: bool
    detail: str = ""
    weight: int | None = None


class CheckerState:
    def __init__(self, cfg: Checker, rs: RSState) -> None:
        self.cfg = cfg
        self.rs = rs
        self.target: Target = checker_target(rs.vs.cfg, rs.cfg, cfg, rs.vs.specs)
        down = None
        if isinstance(cfg, HttpCheck):
            down = max(cfg.delay_before_retry or 0.0, cfg.delay_loop or 0.0)
        self.fsm = CheckerFSM(cfg.retry or 0, cfg.delay_loop or 0.0, cfg.delay_before_retry or 0.0,
                              bool(cfg.alpha), down)
        self.weight_delta = 0
        self.last: Result | None = None
        self.suspended = False

    def adopt(self, old: CheckerState) -> None:
        """Keep an unchanged checker's state across a reload."""
        self.fsm.up, self.fsm.retry_it, self.fsm.has_run = old.fsm.up, old.fsm.retry_it, old.fsm.has_run
        self.weight_delta, self.last = old.weight_delta, old.last

    def snapshot(self) -> dict[str, Any]:
        return {"type": self.cfg.kind, "target": self.target.label, **self.fsm.snapshot(),
                "suspended": self.suspended, "weight_delta": self.weight_delta,
                "last": None if self.last is None else {"ok": self.last.ok, "detail": self.last.detail}}


class RSState:
    def __init__(self, cfg: RealServer, vs: VSState) -> None:
        self.cfg = cfg
        self.vs = vs
        self.checkers = [CheckerState(c, self) for c in cfg.checkers]
        self.alive = self.failed == 0
        self.transitions = 0  # up <-> down changes, kept across reloads (metrics)

    @property
    def failed(self) -> int:
        return sum(1 for c in self.checkers if not c.fsm.up)

    @property
    def weight(self) -> int:
        """Configured weight plus the dynamic deltas of MISC_CHECK/FILE_CHECK checkers."""
        return (self.cfg.weight or 0) + sum(c.weight_delta for c in self.checkers)

    @property
    def name(self) -> str:
        return format_rs(self.vs.cfg, self.cfg)

    def snapshot(self) -> dict[str, Any]:
        return {"name": self.name, "alive": self.alive, "weight": real_weight(self.weight),
                "inhibit": bool(self.cfg.inhibit_on_failure), "checkers": [c.snapshot() for c in self.checkers],
                "transitions": self.transitions, "ipvs": self.ipvs_dests()}

    def ipvs_dests(self) -> list[dict[str, Any]]:
        """The IPVS destinations this real server stands for: one per service of its virtual server."""
        dests = []
        for spec in self.vs.specs:
            dest = dest_object(self.cfg, spec, 0)
            dests.append({"service": spec.ident, "addr": dest["addr"], "port": dest["port"]})
        return dests


class VSState:
    def __init__(self, cfg: VirtualServer, specs: list[ServiceSpec]) -> None:
        self.cfg = cfg
        self.specs = specs
        self.rss: dict[tuple, RSState] = {}
        for rs in cfg.real_servers:
            self.rss[rs.key] = RSState(rs, self)
        self.quorum_up = self.weight_sum() >= cfg.quorum + cfg.hysteresis
        self.installed: Table = {}

    @property
    def name(self) -> str:
        return format_vs(self.cfg)

    def weight_sum(self) -> int:
        return min(MAX_WEIGHT, sum(real_weight(rs.weight) for rs in self.rss.values() if rs.alive))

    @property
    def sorry_active(self) -> bool:
        return self.cfg.sorry_server is not None and not self.quorum_up

    def desired(self) -> Table:
        """What lvsd should hold for this virtual server in the current state."""
        sorry = self.cfg.sorry_server
        table: Table = {}
        for spec in self.specs:
            dests: dict[tuple, dict[str, Any]] = {}
            for rs in self.rss.values():
                if rs.alive and not self.sorry_active:
                    weight = real_weight(rs.weight)
                elif rs.cfg.inhibit_on_failure:
                    weight = 0  # inhibited servers stay, idle
                else:
                    continue
                dest = dest_object(rs.cfg, spec, weight)
                dests[dest_key(dest)] = dest
            if sorry is not None and (self.sorry_active or sorry.inhibit):
                dest = dest_object(sorry, spec, sorry.weight if self.sorry_active else 0)
                if self.sorry_active or dest_key(dest) not in dests:
                    dests[dest_key(dest)] = dest
            table[spec.key] = (service_object(self.cfg, spec), dests)
        return table

    def sync(self, eff: Effects) -> None:
        """Send lvsd what changed since it was last told."""
        want = self.desired()
        for key, (service, dests) in want.items():
            old = self.installed.get(key)
            if old is None:
                continue
            eff.requests += dest_diff(ident(service), old[1], dests)
        self.installed = {k: v for k, v in want.items() if k in self.installed}

    # -- state changes (keepalived's perform_svr_state, update_quorum_state) ---------------------

    def set_alive(self, rs: RSState, alive: bool, eff: Effects) -> None:
        rs.alive = alive
        rs.transitions += 1
        inhibit = rs.cfg.inhibit_on_failure
        if alive:
            eff.log(f"{'Enabling' if inhibit else 'Adding'} service {rs.name} {'of' if inhibit else 'to'} VS "
                    f"{self.name}")
        else:
            eff.log(f"{'Disabling' if inhibit else 'Removing'} service {rs.name} {'of' if inhibit else 'from'} VS "
                    f"{self.name}")
        notify(rs, alive, eff)
        self.update_quorum(eff)

    def weight_changed(self, rs: RSState, old: int, eff: Effects) -> None:
        new = rs.weight
        if real_weight(old) == real_weight(new):
            return
        eff.log(f"Changing weight from {real_weight(old)} to {real_weight(new)} for "
                f"{'' if rs.alive else 'in'}active service {rs.name} of VS {self.name}")
        self.update_quorum(eff)

    def update_quorum(self, eff: Effects) -> None:
        q, h, total = self.cfg.quorum, self.cfg.hysteresis, self.weight_sum()
        sorry = self.cfg.sorry_server
        if not self.quorum_up and total >= q + h:
            self.quorum_up = True
            eff.log(f"Gained quorum {q}+{h}={q + h} <= {total} for VS {self.name}")
            if sorry is not None:
                ss = format_rs(self.cfg, sorry)
                eff.log(f"{'Disabling' if sorry.inhibit else 'Removing'} sorry server {ss} from VS {self.name}")
                eff.log(f"Adding alive servers to the pool for VS {self.name}")
            self.quorum_notify(True, eff)
        elif self.quorum_up and (total == 0 or total < q - h):
            self.quorum_up = False
            eff.log(f"Lost quorum {q}-{h}={q - h} > {total} for VS {self.name}")
            if sorry is not None:
                ss = format_rs(self.cfg, sorry)
                eff.log(f"Removing alive servers from the pool for VS {self.name}")
                eff.log(f"{'Enabling' if sorry.inhibit else 'Adding'} sorry server {ss} to VS {self.name}")
            self.quorum_notify(False, eff)

    def quorum_notify(self, up: bool, eff: Effects) -> None:
        script = self.cfg.quorum_up if up else self.cfg.quorum_down
        if script is not None:
            eff.scripts.append((script, f"quorum_{'up' if up else 'down'} for VS {self.name}"))
        eff.fifo.append(fifo_vs_line(self.cfg, up))

    def snapshot(self) -> dict[str, Any]:
        return {"name": self.name, "services": [s.label() for s in self.specs], "quorum": self.cfg.quorum,
                "hysteresis": self.cfg.hysteresis, "quorum_up": self.quorum_up, "weight_sum": self.weight_sum(),
                "sorry_active": self.sorry_active, "real_servers": [rs.snapshot() for rs in self.rss.values()]}


def notify(rs: RSState, up: bool, eff: Effects) -> None:
    script = rs.cfg.notify_up if up else rs.cfg.notify_down
    if script is not None:
        eff.scripts.append((script, f"notify_{'up' if up else 'down'} for {rs.name} of VS {rs.vs.name}"))
    eff.fifo.append(fifo_rs_line(rs.vs.cfg, rs.cfg, up))


class Runtime:
    """All virtual servers of a configuration; optionally carrying state over from a previous one."""

    def __init__(self, config: Config, previous: Runtime | None = None, diags: Diagnostics | None = None) -> None:
        self.config = config
        self.vss: dict[tuple, VSState] = {}
        for vs in config.virtual_servers:
            specs = supported_specs(vs, config, diags)
            if specs:
                self.vss[vs.key] = VSState(vs, specs)
        if previous is not None:
            self._migrate(previous)

    def checkers(self) -> list[CheckerState]:
        return [c for vs in self.vss.values() for rs in vs.rss.values() for c in rs.checkers]

    def desired(self) -> Table:
        table: Table = {}
        for vs in self.vss.values():
            table.update(vs.desired())
        return table

    def installed(self) -> Table:
        table: Table = {}
        for vs in self.vss.values():
            table.update(vs.installed)
        return table

    # -- start -----------------------------------------------------------------------------------

    def start(self) -> Effects:
        """Everything keepalived does at startup: IPVS setup, quorum state, optional notifies."""
        eff = Effects()
        g = self.config.global_defs
        if g.lvs_flush:
            eff.requests.append({"op": "flush"})
        if g.lvs_timeouts:
            eff.requests.append({"op": "set-timeout", **{k: g.lvs_timeouts.get(k, 0) for k in ("tcp", "tcpfin",
                                                                                               "udp")}})
        for vs in self.vss.values():
            self._start_vs(vs, eff)
        eff.requests += table_diff({}, self.desired())
        for vs in self.vss.values():
            vs.installed = vs.desired()
        return eff

    def _start_vs(self, vs: VSState, eff: Effects, init_notifies: bool = True) -> None:
        if vs.cfg.group is not None:
            for spec in vs.specs:
                eff.log(f"VS {spec.label()} added into group {vs.cfg.group}")
        if not vs.quorum_up:
            q, h = vs.cfg.quorum, vs.cfg.hysteresis
            eff.log(f"Starting with quorum down {q}-{h}={q - h} > {vs.weight_sum()} for VS {vs.name}")
            if vs.cfg.sorry_server is not None:
                sorry = vs.cfg.sorry_server
                eff.log(f"{'Enabling' if sorry.inhibit else 'Adding'} sorry server "
                        f"{format_rs(vs.cfg, sorry)} to VS {vs.name}")
            vs.quorum_notify(False, eff)
        for rs in vs.rss.values():
            if init_notifies and self.config.global_defs.rs_init_notifies:
                notify(rs, rs.alive, eff)
            for chk in rs.checkers:
                eff.log(f"Activating healthchecker for service {chk.target.label} for VS {vs.name}")

    # -- events ----------------------------------------------------------------------------------

    def on_result(self, chk: CheckerState, result: Result) -> tuple[Effects, float]:
        """Feed one check's result; returns what to do and how long until the next check."""
        eff = Effects()
        rs, vs = chk.rs, chk.rs.vs
        chk.last = result
        outcome: Outcome = chk.fsm.record(result.ok)
        if result.ok and result.weight is not None and result.weight != chk.weight_delta:
            old = rs.weight
            chk.weight_delta = result.weight
            vs.weight_changed(rs, old, eff)
        if outcome.transition == "up":
            eff.log(up_message(vs.cfg, rs.cfg, chk.cfg, chk.target))
        elif outcome.transition == "down":
            if result.detail and chk.cfg.kind != "MISC_CHECK":
                eff.log(result.detail)
            eff.log(down_message(vs.cfg, rs.cfg, chk.cfg, chk.target, result.detail))
        elif not result.ok and chk.cfg.log_all_failures and result.detail:
            eff.log(result.detail)
        if outcome.transition is not None:
            alive = rs.failed == 0
            if alive != rs.alive:
                vs.set_alive(rs, alive, eff)
        vs.sync(eff)
        return eff, outcome.delay

    def suspend(self, chk: CheckerState, suspended: bool) -> Effects:
        """ha_suspend: the VIP went away (suspend) or came back (activate)."""
        eff = Effects()
        if chk.suspended != suspended:
            chk.suspended = suspended
            verb = "Suspending" if suspended else "Activating"
            eff.log(f"{verb} healthchecker for service {chk.target.label} for VS {chk.rs.vs.name}")
        return eff

    # -- reload and stop -------------------------------------------------------------------------

    def _migrate(self, old: Runtime) -> None:
        """keepalived's migrate_checkers: unchanged servers keep their state; new ones start fresh.
        A new alpha checker on a live real server does not take it down (PR #1182)."""
        for key, vs in self.vss.items():
            prev = old.vss.get(key)
            if prev is None:
                continue
            for rs_key, rs in vs.rss.items():
                prev_rs = prev.rss.get(rs_key)
                if prev_rs is None:
                    continue
                taken: set[int] = set()
                for chk in rs.checkers:
                    match = next((i for i, p in enumerate(prev_rs.checkers)
                                  if i not in taken and p.cfg == chk.cfg), None)
                    if match is not None:
                        taken.add(match)
                        chk.adopt(prev_rs.checkers[match])
                    elif prev_rs.alive:
                        chk.fsm.up = True
                rs.alive = rs.failed == 0
                rs.transitions = prev_rs.transitions
            vs.quorum_up = vs.weight_sum() >= vs.cfg.quorum + vs.cfg.hysteresis

    def reload_effects(self, old: Runtime) -> Effects:
        """The requests that turn what `old` installed into what this runtime wants."""
        eff = Effects()
        before = old.installed()
        after = self.desired()
        eff.requests = table_diff(before, after)
        for key, vs in self.vss.items():
            vs.installed = vs.desired()
            if key not in old.vss:
                self._start_vs(vs, eff, init_notifies=False)
        return eff

    def shutdown(self, release: bool = True) -> Effects:
        """keepalived's shutdown: log, run omega notifies, and remove what it installed."""
        eff = Effects()
        for vs in self.vss.values():
            for rs in vs.rss.values():
                if rs.alive:
                    eff.log(f"Shutting down service {rs.name} from VS {vs.name}")
                    if vs.cfg.omega:
                        notify(rs, False, eff)
            if vs.cfg.omega and vs.quorum_up:
                vs.quorum_notify(False, eff)
        if release:
            if self.config.global_defs.lvs_flush_on_stop == "ALL":
                eff.requests.append({"op": "flush"})
            else:
                eff.requests += table_diff(self.installed(), {})
            for vs in self.vss.values():
                vs.installed = {}
        return eff

    def snapshot(self) -> dict[str, Any]:
        return {"virtual_servers": [vs.snapshot() for vs in self.vss.values()]}
