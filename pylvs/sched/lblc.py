"""Locality-based least-connection (ip_vs_lblc.c): a cache destination address -> real server.

A destination address sticks to its server while that server is usable and not "overloaded" in
the lblc sense (more active connections than its weight while some server is below half of its
weight); otherwise wlc picks a new one and the cache is updated.

The kernel expires cache entries from a 60 s timer: every 30th tick removes entries unused for
`lblc_expiration` (a sysctl, default 24 h), and a tick that finds more than 16384 entries removes
entries idle for 6 min. Being sans-I/O, this module runs the ticks that are due before each
scheduling decision, from `flow.now`; the timer starts at the first decision.

The expirations are netns-wide sysctls: change them for everyone through the module-level
`settings`, or give one scheduler its own `LocalitySettings` via its `settings` attribute.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from pylvs.engine.services import RealServer, VirtualService
from pylvs.sched.base import Flow
from pylvs.sched.tracking import LeastIndex, TrackedScheduler
from pylvs.sched.wlc import weighted_least, wlc_key

DEFAULT_EXPIRATION = 24 * 60 * 60.0  # seconds, lblc_expiration / lblcr_expiration
CHECK_EXPIRE_INTERVAL = 60.0  # the garbage-collection timer period
ENTRY_TIMEOUT = 6 * 60.0  # idle time after which an entry may go when the table is too big
COUNT_FOR_FULL_EXPIRATION = 30  # every 30th tick is a full expiration check
TAB_BITS = 10  # CONFIG_IP_VS_LBLC_TAB_BITS / CONFIG_IP_VS_LBLCR_TAB_BITS
MAX_SIZE = (1 << TAB_BITS) * 16  # entries beyond this are collected


@dataclass
class LocalitySettings:
    """The sysctls /proc/sys/net/ipv4/vs/lblc_expiration and lblcr_expiration, in seconds."""

    lblc_expiration: float = DEFAULT_EXPIRATION
    lblcr_expiration: float = DEFAULT_EXPIRATION


settings = LocalitySettings()  # shared by every lblc/lblcr scheduler unless one is given its own


def locality_overloaded(dest: RealServer, dests: Sequence[RealServer]) -> bool:
    """lblc/lblcr `is_overloaded`: over its weight in active conns while some dest is under half."""
    if dest.activeconns > dest.weight:
        return any(d.activeconns * 2 < d.weight for d in dests)
    return False


class LocalityScheduler(TrackedScheduler):
    """What lblc and lblcr share: the wlc choice over all dests and the lblc overload rule, both
    answered from indexes (a wlc index, and the set of dests under half of their weight)."""

    def __init__(self, service: VirtualService) -> None:
        self.index: LeastIndex = LeastIndex(wlc_key)
        self.under_half: set[RealServer] = set()
        super().__init__(service)

    def reset(self) -> None:
        self.index.reset()
        self.under_half.clear()

    def refresh(self) -> None:
        changed, rank = self.changed, self.tracker.rank
        self.index.refile(changed, rank)
        for dest in changed:
            if dest in rank and dest.activeconns * 2 < dest.weight:
                self.under_half.add(dest)
            else:
                self.under_half.discard(dest)
        changed.clear()

    def least(self, service: VirtualService) -> RealServer | None:
        """weighted_least(service.dests), from the index."""
        if self.index.inexact:
            return weighted_least(service.dests)
        return self.index.least()

    def overloaded(self, service: VirtualService, dest: RealServer) -> bool:
        """locality_overloaded(dest, service.dests), from the index."""
        return dest.activeconns > dest.weight and bool(self.under_half)


class _Entry(Protocol):
    lastuse: float


E = TypeVar("E", bound=_Entry)


class LocalityTable(Generic[E]):
    """Cache entries keyed by destination address, with the kernel's collection timer."""

    def __init__(self) -> None:
        self.entries: dict[bytes, E] = {}
        self.next_tick: float | None = None
        self.counter = 1

    def advance(self, now: float, expiration: float) -> None:
        """Run the timer ticks due by `now` (ip_vs_lblc_check_expire, every 60 s)."""
        if self.next_tick is None:
            self.next_tick = now + CHECK_EXPIRE_INTERVAL
            return
        while self.next_tick <= now:
            tick = self.next_tick
            if self.counter % COUNT_FOR_FULL_EXPIRATION == 0:
                self._full_check(tick, expiration)
                self.counter = 1
                self.next_tick += CHECK_EXPIRE_INTERVAL
            elif len(self.entries) <= MAX_SIZE:
                # Ticks without traffic only count up: skip to the next full check (or past now).
                due = int((now - tick) // CHECK_EXPIRE_INTERVAL) + 1
                if not self.entries:  # nothing to expire: just keep the counter's phase
                    self.counter = (self.counter - 1 + due) % COUNT_FOR_FULL_EXPIRATION + 1
                    self.next_tick += due * CHECK_EXPIRE_INTERVAL
                    continue
                step = min(due, COUNT_FOR_FULL_EXPIRATION - self.counter)
                self.counter += step
                self.next_tick += step * CHECK_EXPIRE_INTERVAL
            else:
                self._collect(tick)
                self.next_tick += CHECK_EXPIRE_INTERVAL

    def _full_check(self, now: float, expiration: float) -> None:
        for key in [k for k, en in self.entries.items() if now >= en.lastuse + expiration]:
            del self.entries[key]

    def _collect(self, now: float) -> None:
        # The kernel walks its hash buckets from a rover; we walk in insertion (oldest-first) order.
        goal = min((len(self.entries) - MAX_SIZE) * 4 // 3, MAX_SIZE // 2)
        stale = []
        for key, en in self.entries.items():
            if now >= en.lastuse + ENTRY_TIMEOUT:
                stale.append(key)
                if len(stale) >= goal:
                    break
        for key in stale:
            del self.entries[key]


class _LblcEntry:
    __slots__ = ("dest", "lastuse")

    def __init__(self, dest: RealServer, lastuse: float) -> None:
        self.dest = dest
        self.lastuse = lastuse


class LocalityBasedLeastConnection(LocalityScheduler):
    name = "lblc"

    def __init__(self, service: VirtualService) -> None:
        self.settings = settings
        self.cache: LocalityTable[_LblcEntry] = LocalityTable()
        super().__init__(service)

    def schedule(self, service: VirtualService, flow: Flow) -> RealServer | None:
        if self.changed:
            self.refresh()
        self.cache.advance(flow.now, self.settings.lblc_expiration)
        en = self.cache.entries.get(flow.daddr)
        if en is not None:
            en.lastuse = flow.now
            dest = en.dest
            # As the kernel: a cache hit ignores the threshold OVERLOAD flag, only weight,
            # availability and the lblc overload rule count.
            if dest.available and dest.weight > 0 and not self.overloaded(service, dest):
                return dest
        dest = self.least(service)
        if dest is None:
            return None
        if en is None:
            self.cache.entries[flow.daddr] = _LblcEntry(dest, flow.now)
        else:
            en.dest = dest
        return dest
