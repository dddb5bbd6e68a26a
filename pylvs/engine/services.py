"""Virtual services and real servers: the desired state the engine forwards by.

Addresses are kept packed (`bytes`, 4 for IPv4 and 16 for IPv6) because that is what the packet
path compares against; the length is the address family (`family()`), as the kernel's
`union nf_inet_addr` plus `af`. `pack_ip()`/`ip()` convert to and from text for people.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field

from pylvs.engine.stats import Stats
from pylvs.ipvs_uapi import (
    AF_INET,
    AF_INET6,
    PROTO_NAMES,
    PROTO_TCP,
    PROTO_UDP,
    SVC_F_ONEPACKET,
    SVC_F_PERSISTENT,
    SVC_F_SCHED1,
    SVC_F_SCHED2,
    SVC_F_SCHED3,
    Method,
)

__all__ = ["PROTO_NAMES", "PROTO_TCP", "PROTO_UDP", "SVC_F_ONEPACKET", "SVC_F_PERSISTENT", "SVC_F_SCHED1",
           "SVC_F_SCHED2", "SVC_F_SCHED3", "ConfigError", "LocalAddress", "Method", "RealServer", "VirtualService",
           "family", "ip", "pack_ip", "prefix_len", "prefix_mask"]

DEFAULT_SCHEDULER = "wlc"
DEFAULT_PERSISTENT_TIMEOUT = 360


class ConfigError(Exception):
    """A rejected change; `errno_name` says which ipvsadm message applies (ipvs.md §1.4)."""

    def __init__(self, errno_name: str, message: str):
        super().__init__(message)
        self.errno_name = errno_name


def pack_ip(text: str) -> bytes:
    """Text to packed address: IPv4 (also the inet_aton forms ipvsadm takes) or IPv6."""
    if ":" in text:
        return socket.inet_pton(socket.AF_INET6, text)
    return socket.inet_aton(text) if text.count(".") == 3 else socket.inet_pton(socket.AF_INET, text)


def ip(addr: bytes) -> str:
    return socket.inet_ntop(socket.AF_INET if len(addr) == 4 else socket.AF_INET6, addr)


def prefix_mask(prefix: int, size: int) -> bytes:
    """The netmask of `prefix` leading one bits in an address of `size` bytes."""
    bits = size * 8
    return (((1 << bits) - 1) >> (bits - prefix) << (bits - prefix)).to_bytes(size, "big")


def prefix_len(mask: bytes) -> int:
    """The leading one bits of a netmask (what ipvsadm shows as an IPv6 `mask`)."""
    value = int.from_bytes(mask, "big")
    bits = len(mask) * 8
    return bits - (((1 << bits) - 1) ^ value).bit_length()


def family(addr: bytes) -> int:
    return AF_INET if len(addr) == 4 else AF_INET6


@dataclass(eq=False)
class RealServer:
    """A destination (IPVS `ip_vs_dest`): configuration plus the counters schedulers read."""

    addr: bytes
    port: int
    weight: int = 1
    method: Method = Method.ROUTE
    u_threshold: int = 0
    l_threshold: int = 0
    tun_type: str = "ipip"
    tun_port: int = 0
    tun_flags: str = "nocsum"
    # runtime state
    activeconns: int = 0
    inactconns: int = 0
    persistconns: int = 0
    overloaded: bool = False
    available: bool = True
    last_weight: int = 0
    stats: Stats = field(default_factory=Stats)

    # (changed-dest set, fields it cares about) of each scheduler indexing this dest
    # (pylvs.sched.tracking); a plain class attribute, not a dataclass field.
    sched_watchers = ()

    def __post_init__(self) -> None:
        self.last_weight = self.weight

    def __setattr__(self, name: str, value: object) -> None:
        # Reads stay plain attribute reads, so the packet path is unaffected; writes, which happen on
        # connection state changes and configuration edits, tell the watching schedulers.
        object.__setattr__(self, name, value)
        if name in SCHED_FIELDS:
            for changed, fields in self.sched_watchers:
                if name in fields:
                    changed.add(self)

    def watch(self, changed: set[RealServer], fields: frozenset[str]) -> None:
        """From now on, assigning one of `fields` (a subset of SCHED_FIELDS) adds this dest to `changed`."""
        if not any(w is changed for w, _ in self.sched_watchers):  # sets compare by value: use `is`
            self.sched_watchers = (*self.sched_watchers, (changed, fields))

    def unwatch(self, changed: set[RealServer]) -> None:
        self.sched_watchers = tuple(pair for pair in self.sched_watchers if pair[0] is not changed)

    @property
    def totalconns(self) -> int:
        return self.activeconns + self.inactconns

    def conn_bound(self) -> None:
        """Overload is set when a connection is bound and the upper threshold is reached."""
        if self.u_threshold and self.totalconns >= self.u_threshold and not self.overloaded:
            self.overloaded = True

    def conn_unbound(self) -> None:
        """Overload clears below the lower threshold, or 3/4 of the upper when none is set."""
        self.update_overload()

    def update_overload(self) -> None:
        # Assigned only when it changes: every assignment wakes the watching schedulers.
        if not self.u_threshold:
            overloaded = False
        else:
            low = self.l_threshold or self.u_threshold - self.u_threshold // 4
            if self.totalconns < low:
                overloaded = False
            elif self.totalconns >= self.u_threshold:
                overloaded = True
            else:
                return
        if overloaded != self.overloaded:
            self.overloaded = overloaded


# The RealServer fields a scheduler's choice depends on; assigning one tells the schedulers watching it.
SCHED_FIELDS = frozenset({"weight", "activeconns", "inactconns", "overloaded", "available"})


@dataclass(eq=False)
class LocalAddress:
    """A FULLNAT local address (LIP) of a service, with its port cursor and counters."""

    addr: bytes
    next_port: int = 0
    conns: int = 0
    conflicts: int = 0


@dataclass(eq=False)
class VirtualService:
    """A virtual service keyed by (protocol, VIP, port); `dests` is in kernel order, newest first."""

    protocol: int
    addr: bytes
    port: int
    scheduler: str = DEFAULT_SCHEDULER
    flags: int = 0
    timeout: int = 0  # persistence timeout in seconds, meaningful with SVC_F_PERSISTENT
    netmask: bytes = b"\xff\xff\xff\xff"
    fwmark: int = 0
    dests: list[RealServer] = field(default_factory=list)
    stats: Stats = field(default_factory=Stats)
    sched: object = None  # the bound Scheduler instance
    laddrs: list[LocalAddress] = field(default_factory=list)  # FULLNAT local addresses
    proxy_protocol: str = ""  # FULLNAT client address: "" = TOA option, "v1"/"v2" = PROXY protocol header
    pe: str = ""  # persistence engine ("sip"), kept and listed as IPVS does
    synproxy: bool = False  # TCP: the director answers SYNs with SYN cookies (pylvs.engine.synproxy)
    laddr_cursor: int = 0

    @property
    def key(self) -> tuple[int, bytes, int]:
        return (self.protocol, self.addr, self.port)

    @property
    def family(self) -> int:
        return family(self.addr)

    @property
    def persistent(self) -> bool:
        return bool(self.flags & SVC_F_PERSISTENT)

    def find_dest(self, addr: bytes, port: int) -> RealServer | None:
        for dest in self.dests:
            if dest.addr == addr and dest.port == port:
                return dest
        return None
