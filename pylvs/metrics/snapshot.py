"""Immutable views of the director's state, copied by the packet loop for readers in other threads.

`build(sources)` is a generator run by the loop: it copies the service table a piece at a time
(PIECE real servers per step, so thousands of services never stall a round of forwarding) and returns
the finished `Snapshot`. The connection table is never walked: its size and the per-server
active/inactive counts are kept by the engine as it goes. Health-check state lives in the health
checks' thread and is read from there by whoever reads the snapshot (`health_views`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from pylvs import __version__
from pylvs.engine.drops import REASONS
from pylvs.engine.engine import Engine
from pylvs.engine.services import RealServer, VirtualService, ip
from pylvs.engine.stats import Stats
from pylvs.ipvs_uapi import PROTO_NAMES, PROTO_TCP, PROTO_UDP

PIECE = 100  # services and real servers copied per step of the loop: 1-3 ms on a busy 2-core VM
SYNC_DAEMONS = ("master", "backup")
SYNC_COUNTS = ("messages", "conns")  # the rest of a daemon's stats are problems, by reason


@dataclass(frozen=True, slots=True)
class Traffic:
    """What `ipvsadm --stats` shows: counts since the last `-Z`."""

    conns: int = 0
    inpkts: int = 0
    outpkts: int = 0
    inbytes: int = 0
    outbytes: int = 0

    @classmethod
    def of(cls, stats: Stats) -> Traffic:
        return cls(*stats.counters())


@dataclass(frozen=True, slots=True)
class DestView:
    addr: str
    port: int
    method: str  # ipvsadm's Forward column: Masq, Route, Tunnel, Local, FullNat
    weight: int
    active: int
    inactive: int
    persistent: int
    overloaded: bool
    traffic: Traffic


@dataclass(frozen=True, slots=True)
class ServiceView:
    proto: str  # TCP, UDP, or FWM for a fwmark service (as /proc/net/ip_vs)
    addr: str  # "" for a fwmark service
    port: int
    fwmark: int
    scheduler: str
    persistence: int  # seconds, 0 when not persistent
    traffic: Traffic
    dests: tuple[DestView, ...]

    @property
    def labels(self) -> tuple[str, str, str, str]:
        """node_exporter's (local_address, local_port, proto, local_mark) for this service."""
        return service_labels(self.proto, self.addr, self.port, self.fwmark)


def service_labels(proto: str, addr: str, port: int, fwmark: int) -> tuple[str, str, str, str]:
    # /proc/net/ip_vs prints a fwmark service as `FWM  %08X`; node_exporter keeps that text as local_mark.
    if fwmark:
        return ("", "0", "FWM", f"{fwmark:08X}")
    return (addr, str(port), proto, "")


@dataclass(frozen=True, slots=True)
class RingView:
    interface: str
    ring: str  # ip, ip6, arp, fwmark:N or fwmark6:N
    packets: int
    drops: int
    truncated: int
    resyncs: int


@dataclass(frozen=True, slots=True)
class SyncView:
    daemon: str  # master or backup
    running: bool
    interface: str = ""
    syncid: int = 0
    group: str = ""
    messages: int = 0
    conns: int = 0
    problems: tuple[tuple[str, int], ...] = ()


@dataclass(frozen=True, slots=True)
class CheckView:
    kind: str  # TCP_CHECK, HTTP_GET, ...
    target: str
    up: bool
    has_run: bool
    last_ok: bool | None  # None before the first result
    detail: str


@dataclass(frozen=True, slots=True)
class HealthView:
    """One real server of a keepalived virtual server, for one IPVS service it stands for."""

    virtual_server: str  # keepalived's names, as in its log lines
    real_server: str
    labels: tuple[str, str, str, str, str, str]  # node_exporter's backend labels
    alive: bool
    weight: int
    inhibit: bool
    transitions: int
    checks: tuple[CheckView, ...]


@dataclass(frozen=True)
class Snapshot:
    taken: float  # wall-clock time the copy was finished
    version: str
    total: Traffic
    services: tuple[ServiceView, ...]
    conn_entries: int
    templates: int
    standby: bool
    drops: tuple[tuple[str, int], ...]  # every declared reason, in declaration order
    frame_errors: tuple[tuple[str, int], ...]
    rings: tuple[RingView, ...]
    datapath: str
    datapath_reason: str
    fastpath_conns: int
    fastpath: tuple[tuple[str, int], ...]
    sync: tuple[SyncView, ...]
    requests: tuple[tuple[str, str, int], ...]  # (op, ok|error, count)
    health: tuple[HealthView, ...] | None = None  # None: no health checks run (no --keepalived)


def ring_name(mark: int | None, ipv6: bool = False) -> str:
    """The director's rings: per interface one for IPv4 and one for IPv6 without a mark, one for ARP, one
    per fwmark service and family."""
    if mark is None:
        return "arp"
    six = "6" if ipv6 else ""
    return f"fwmark{six}:{mark}" if mark else f"ip{six}"


@dataclass
class Sources:
    """Where the loop reads what the engine does not hold; every callable runs in the loop's thread."""

    engine: Engine
    rings: Callable[[], Iterable[tuple[str, str, Mapping[str, int]]]] = lambda: ()  # interface, ring_name, counters
    datapath: Callable[[], Mapping[str, Any]] = lambda: {"datapath": "python", "reason": ""}
    sync: Callable[[], Iterable[Mapping[str, Any]]] = lambda: ()
    frame_errors: Callable[[], Mapping[str, int]] = lambda: {}
    requests: Mapping[tuple[str, str], int] = field(default_factory=dict)


def _dest(dest: RealServer) -> DestView:
    return DestView(ip(dest.addr), dest.port, dest.method.label, dest.weight, dest.activeconns, dest.inactconns,
                    dest.persistconns, dest.overloaded, Traffic.of(dest.stats))


def _service(svc: VirtualService, dests: tuple[DestView, ...]) -> ServiceView:
    proto = "FWM" if svc.fwmark else PROTO_NAMES.get(svc.protocol, str(svc.protocol))
    return ServiceView(proto, "" if svc.fwmark else ip(svc.addr), svc.port, svc.fwmark, svc.scheduler,
                       svc.timeout if svc.persistent else 0, Traffic.of(svc.stats), dests)


def _sync(daemons: Iterable[Mapping[str, Any]]) -> tuple[SyncView, ...]:
    running = {d["state"]: d for d in daemons}
    views = []
    for name in SYNC_DAEMONS:
        d = running.get(name)
        if d is None:
            views.append(SyncView(name, False))
            continue
        stats = d.get("stats", {})
        problems = tuple(sorted((k, v) for k, v in stats.items() if k not in SYNC_COUNTS))
        views.append(SyncView(name, True, d.get("mcast_ifn", ""), d.get("syncid", 0),
                              f"{d.get('mcast_group', '')}:{d.get('mcast_port', '')}",
                              stats.get("messages", 0), stats.get("conns", 0), problems))
    return tuple(views)


def build(src: Sources) -> Iterator[None]:
    """Copy the director's state; yields between pieces, returns the Snapshot (StopIteration.value)."""
    engine = src.engine
    services = []
    copied = 0
    for svc in list(engine.table):
        dests = tuple(_dest(d) for d in svc.dests)
        services.append(_service(svc, dests))
        copied += len(dests) + 1
        if copied >= PIECE:
            copied = 0
            yield
    drops = engine.drops
    dp = src.datapath()
    return Snapshot(
        taken=time.time(), version=__version__, total=Traffic.of(engine.total), services=tuple(services),
        conn_entries=len(engine.conns), templates=len(engine.conns.templates), standby=engine.standby,
        drops=tuple((reason, drops.get(reason, 0)) for reason in REASONS),
        frame_errors=tuple(sorted(src.frame_errors().items())),
        rings=tuple(RingView(name, ring, c.get("packets", 0), c.get("drops", 0), c.get("truncated", 0),
                             c.get("resyncs", 0)) for name, ring, c in src.rings()),
        datapath=str(dp.get("datapath", "python")), datapath_reason=str(dp.get("reason", "")),
        fastpath_conns=int(dp.get("offloaded_conns", 0)), fastpath=tuple(dp.get("counters", {}).items()),
        sync=_sync(src.sync()),
        requests=tuple(sorted((op, result, n) for (op, result), n in src.requests.items())),
    )


def take(src: Sources) -> Snapshot:
    """The whole copy at once (a control request: the loop answers it between rounds anyway)."""
    steps = build(src)
    while True:
        try:
            next(steps)
        except StopIteration as done:
            return done.value


# -- health checks: keepalived's status (HealthManager.status) -----------------------------------

_PROTOCOLS = {"tcp": PROTO_NAMES[PROTO_TCP], "udp": PROTO_NAMES[PROTO_UDP]}


def _check(chk: Mapping[str, Any]) -> CheckView:
    last = chk.get("last") or {}
    return CheckView(str(chk.get("type", "")), str(chk.get("target", "")), bool(chk.get("up")),
                     bool(chk.get("has_run")), last.get("ok") if last else None, str(last.get("detail", "")))


def health_views(status: Mapping[str, Any]) -> tuple[HealthView, ...]:
    """Every (real server, IPVS service) pair the health checks know, down ones included: a real server
    that failed without `inhibit_on_failure` is no longer in the service table, but is still here."""
    views = []
    for vs in status.get("virtual_servers", ()):
        for rs in vs.get("real_servers", ()):
            checks = tuple(_check(c) for c in rs.get("checkers", ()))
            for dest in rs.get("ipvs", ()):
                svc = dest.get("service", {})
                fwmark = int(svc.get("fwmark", 0))
                proto = _PROTOCOLS.get(str(svc.get("protocol", "")).lower(), str(svc.get("protocol", "")).upper())
                local = service_labels(proto, str(svc.get("addr", "")), int(svc.get("port", 0)), fwmark)
                labels = (local[0], local[1], str(dest.get("addr", "")), str(dest.get("port", 0)), local[2], local[3])
                views.append(HealthView(str(vs.get("name", "")), str(rs.get("name", "")), labels,
                                        bool(rs.get("alive")), int(rs.get("weight", 0)), bool(rs.get("inhibit")),
                                        int(rs.get("transitions", 0)), checks))
    return tuple(views)
