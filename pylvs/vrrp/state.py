"""The VRRP state machine of one instance, sans I/O: events in, actions out.

Events: `start`, `receive` (a decoded advertisement), `expire` (the clock reached `deadline()`),
`track` (a tracked interface or script changed the priority or the fault state), `shutdown`.
Actions: `SendAdvert`, `Garp`, `Transition` (what the director does on entering a state: claim or
release the addresses, sync daemon roles, notify scripts). Time is always passed in.

Semantics are RFC 5798 §6.4 with keepalived's choices (keepalived.md §4):
* master down interval = 3 × master advert interval + skew; skew = (256 - priority) / 256 s for
  VRRPv2 and (256 - priority) / 256 × the master's interval for v3; a v3 backup learns the
  master's interval from its adverts, a v2 one drops adverts whose interval differs from its own;
* a priority-0 advert (the master stepping down) makes the backup take over after the skew only;
* a master that hears a higher priority (or the same one from a higher address) becomes backup;
  one that hears a lower priority answers at once with its own advert (keepalived does so);
* `nopreempt`: a backup accepts any master; `preempt_delay`: a backup with the higher priority
  tolerates a lower master for that long before it lets its timer run out;
* priority 255 (the address owner) starts as master; the others start as backup (keepalived
  2.2.7 does the same with `state MASTER`); a master leaving for FAULT or STOP sends priority 0;
* gratuitous ARP on becoming master: `garp_repeat` at once and again after `garp_delay`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from pylvs.vrrp.packet import AUTH_NONE, Advert

log = logging.getLogger("pylvs.vrrp")

INIT, BACKUP, MASTER, FAULT, STOP = "INIT", "BACKUP", "MASTER", "FAULT", "STOP"
OWNER = 255


@dataclass(frozen=True)
class SendAdvert:
    priority: int


@dataclass(frozen=True)
class Garp:
    """Gratuitous ARP for the instance's addresses, `repeat` times."""

    repeat: int


@dataclass(frozen=True)
class Transition:
    old: str
    new: str
    priority: int
    reason: str = ""


Action = SendAdvert | Garp | Transition


@dataclass
class InstanceConfig:
    name: str
    vrid: int
    priority: int = 100
    advert_int: float = 1.0
    version: int = 2
    addresses: tuple[str, ...] = ()
    primary_ip: str = "0.0.0.0"  # the interface's address: adverts' source, tie-breaker
    preempt: bool = True
    preempt_delay: float = 0.0
    auth_type: int = AUTH_NONE
    auth_data: bytes = b""
    garp_delay: float = 5.0   # vrrp_garp_master_delay
    garp_repeat: int = 5      # vrrp_garp_master_repeat


@dataclass
class Instance:
    config: InstanceConfig
    state: str = INIT
    track_delta: int = 0        # sum of the tracked objects' weights now in effect
    faulted: set[str] = field(default_factory=set)  # tracked objects that put us in FAULT
    master_adver_int: float = 0.0
    down_at: float | None = None   # master down timer (backup)
    advert_at: float | None = None  # adver timer (master)
    garp_at: float | None = None    # the second round of gratuitous ARP
    preempt_at: float | None = None  # preempt_delay running out
    master_ip: str | None = None     # who we last heard as master
    stats: dict[str, int] = field(default_factory=lambda: {
        "adverts_sent": 0, "adverts_received": 0, "became_master": 0, "released_master": 0, "dropped": 0,
        "priority_zero_sent": 0, "priority_zero_received": 0})

    def __post_init__(self) -> None:
        self.master_adver_int = self.config.advert_int

    # -- derived values -------------------------------------------------------------------------

    @property
    def priority(self) -> int:
        """The effective priority: the owner's never moves, the others' stay within 1..254."""
        base = self.config.priority
        if base == OWNER:
            return OWNER
        return max(1, min(254, base + self.track_delta))

    def skew(self) -> float:
        ratio = (256 - self.priority) / 256
        return ratio if self.config.version == 2 else ratio * self.master_adver_int

    def master_down_interval(self) -> float:
        return 3 * self.master_adver_int + self.skew()

    def deadline(self) -> float | None:
        times = [t for t in (self.down_at, self.advert_at, self.garp_at) if t is not None]
        return min(times) if times else None

    def _advert(self, priority: int | None = None) -> SendAdvert:
        self.stats["adverts_sent"] += 1
        return SendAdvert(self.priority if priority is None else priority)

    # -- events ---------------------------------------------------------------------------------

    def start(self, now: float) -> list[Action]:
        if self.faulted:
            return self.enter(FAULT, now, "init")
        if self.priority == OWNER:
            return self.become_master(now, "init")
        return self.become_backup(now, "init")

    def receive(self, advert: Advert, src: str, now: float) -> list[Action]:
        """An advertisement for our VRID that passed the checks of `accepts`."""
        self.stats["adverts_received"] += 1
        if self.state == BACKUP:
            return self._backup_receives(advert, src, now)
        if self.state == MASTER:
            return self._master_receives(advert, src, now)
        return []

    def accepts(self, advert: Advert) -> str | None:
        """Why an advertisement for our VRID is dropped (keepalived's words), None if it is not."""
        cfg = self.config
        if advert.version != cfg.version:
            return f"({cfg.name}) wrong version. Received {advert.version} and expect {cfg.version}"
        if cfg.version == 2:
            if advert.auth_type != cfg.auth_type:
                return f"({cfg.name}) received a {advert.auth_type} auth, expecting {cfg.auth_type}!"
            if cfg.auth_type and advert.auth_data != cfg.auth_data.ljust(8, b"\0")[:8]:
                return f"({cfg.name}) Received incorrect auth password"
            if advert.advert_int != round(cfg.advert_int) and advert.priority:
                return (f"({cfg.name}) advertisement interval mismatch mine={round(cfg.advert_int)} "
                        f"sec rcv'd={advert.advert_int:g} sec")
        if len(advert.addresses) != len(cfg.addresses):
            return f"({cfg.name}) received an invalid ip number count {len(advert.addresses)}, expected " \
                   f"{len(cfg.addresses)}!"
        return None

    def expire(self, now: float) -> list[Action]:
        actions: list[Action] = []
        if self.garp_at is not None and now >= self.garp_at:
            self.garp_at = None
            if self.state == MASTER:
                actions.append(Garp(self.config.garp_repeat))
        if self.state == BACKUP and self.down_at is not None and now >= self.down_at:
            log.info("(%s) Receive advertisement timeout", self.config.name)
            actions += self.become_master(now, "timeout")
        elif self.state == MASTER and self.advert_at is not None and now >= self.advert_at:
            self.advert_at = now + self.config.advert_int
            actions.append(self._advert())
        return actions

    def track(self, delta: int, faulted: set[str], now: float) -> list[Action]:
        """The tracked objects' state: the weight to add, and those that force FAULT."""
        self.track_delta = delta
        self.faulted = set(faulted)
        if self.state == STOP:
            return []
        if self.faulted and self.state != FAULT:
            return self.fault(now, "tracking " + ", ".join(sorted(self.faulted)))
        if not self.faulted and self.state == FAULT:
            return self.start(now)
        return []

    def fault(self, now: float, reason: str) -> list[Action]:
        """Enter FAULT; a master first tells the others (priority 0), as keepalived does."""
        step_down = [self._advert(0)] if self.state == MASTER else []
        return step_down + self.enter(FAULT, now, reason)

    def shutdown(self, now: float) -> list[Action]:
        """Leave for good: a master tells the others at once (priority 0), as keepalived at exit."""
        actions: list[Action] = []
        if self.state == MASTER:
            self.stats["priority_zero_sent"] += 1
            actions.append(SendAdvert(0))
        return actions + self.enter(STOP, now, "shutdown")

    # -- the two states ---------------------------------------------------------------------------

    def _backup_receives(self, advert: Advert, src: str, now: float) -> list[Action]:
        cfg = self.config
        if advert.priority == 0:
            self.stats["priority_zero_received"] += 1
            self.down_at = now + self.skew()
            return []
        lower = advert.priority < self.priority
        if lower and cfg.preempt:
            if not cfg.preempt_delay:
                return []  # let the master down timer run out: we take over
            if self.preempt_at is None:
                self.preempt_at = now + cfg.preempt_delay
            if now >= self.preempt_at:
                return []
        if not lower:
            self.preempt_at = None
        self.master_ip = src
        if cfg.version == 3:
            self.master_adver_int = advert.advert_int
        self.down_at = now + self.master_down_interval()
        return []

    def _master_receives(self, advert: Advert, src: str, now: float) -> list[Action]:
        if advert.priority == 0:
            self.advert_at = now + self.config.advert_int
            return [self._advert()]
        ours = self.priority
        if advert.priority > ours or (advert.priority == ours and _ip_key(src) > _ip_key(self.config.primary_ip)):
            self.master_ip = src
            if self.config.version == 3:
                self.master_adver_int = advert.advert_int
            return self.become_backup(now, f"higher priority advert from {src}")
        # A lower priority master: tell it at once, so that it steps down without waiting.
        self.advert_at = now + self.config.advert_int
        return [self._advert()]

    def become_master(self, now: float, reason: str) -> list[Action]:
        self.stats["became_master"] += 1
        actions = self.enter(MASTER, now, reason)
        self.master_ip = self.config.primary_ip
        self.down_at = self.preempt_at = None
        self.advert_at = now + self.config.advert_int
        self.garp_at = now + self.config.garp_delay if self.config.garp_delay else None
        return [self._advert(), *actions, Garp(self.config.garp_repeat)]

    def become_backup(self, now: float, reason: str) -> list[Action]:
        if self.state == MASTER:
            self.stats["released_master"] += 1
        actions = self.enter(BACKUP, now, reason)
        self.master_adver_int = self.master_adver_int or self.config.advert_int
        self.down_at = now + self.master_down_interval()
        return actions

    def enter(self, state: str, now: float, reason: str) -> list[Action]:
        old, self.state = self.state, state
        self.advert_at = self.garp_at = None
        if state in (FAULT, STOP):
            self.down_at = None
            self.master_ip = None
        if state == BACKUP and old != MASTER:
            self.master_adver_int = self.config.advert_int
        suffix = " (init)" if reason == "init" else ""
        log.info("(%s) Entering %s STATE%s", self.config.name, state, suffix)
        return [Transition(old, state, self.priority, reason)]

    def describe(self, now: float) -> dict[str, object]:
        cfg = self.config
        return {"name": cfg.name, "state": self.state, "vrid": cfg.vrid, "version": cfg.version,
                "priority": self.priority, "base_priority": cfg.priority, "advert_int": cfg.advert_int,
                "master_adver_int": self.master_adver_int, "master_down_interval": self.master_down_interval(),
                "preempt": cfg.preempt, "preempt_delay": cfg.preempt_delay, "addresses": list(cfg.addresses),
                "master": self.master_ip, "fault": sorted(self.faulted), "stats": dict(self.stats)}


def _ip_key(addr: str) -> tuple[int, ...]:
    return tuple(int(p) for p in addr.split("."))
