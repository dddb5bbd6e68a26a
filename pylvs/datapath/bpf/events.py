"""The fast path's event ring from Python: the TCP state changes the kernel made, in order.

The program reports every state change it makes while forwarding a segment by a recipe (a FIN, a
RST, the ACK that ends LAST_ACK) on a BPF ring buffer (pylvs_events). `EventRing` reads it through
libbpf: `fileno()` is pollable with the director's other sockets, `read()` returns the events
waiting, oldest first, as `FlowEvent`s (layout: pylvs.engine.flow.EVENT), the connections the
program scheduled itself as `SchedEvent`s (CREATED, pylvs_sched.bpf.h) and the connections whose
entries it took out as they ended as `RetiredEvent`s (pylvs.engine.flow.RETIRED), told apart by size.
"""

from __future__ import annotations

import ctypes
import struct
from typing import NamedTuple

from pylvs.datapath.bpf.libbpf import RING_SAMPLE_FN, Libbpf
from pylvs.engine.flow import EVENT_FIELDS, KEY, KEY_FIELDS, RETIRED
from pylvs.ipvs_uapi import AF_INET6

# CREATED (struct pylvs_ksched_event): a pylvs_flow_event, then gen, slot, dest index, raddr, rport, and
# the MAC and interface NAT's reply entry sends to.
SCHED_EVENT = struct.Struct("=" + "".join(code for _, code, _ in EVENT_FIELDS) + "III4s2s6sI4x")


class SchedEvent(NamedTuple):
    """CREATED: the program scheduled a SYN itself (pylvs_sched.bpf.h) and made the connection's entries."""

    ts_ns: int
    key: bytes        # the SYN's 12-byte IPv4 key (client, VIP, client port, VIP port)
    gen: int          # the publication it scheduled by (pylvs.datapath.bpf.ksched)
    slot: int
    dest: int         # the destination's index in the service as published
    raddr: bytes      # the real server and the port the reply entry is keyed by
    rport: bytes
    hw: bytes         # NAT: the SYN's source MAC and ingress interface, the reply entry's next hop
    ifindex: int


class FlowEvent(NamedTuple):
    ts_ns: int
    proto: int
    key: bytes        # the segment's key as the engine's tables hold it: saddr, daddr (4 or 16 bytes), ports
    tcp_flags: int
    direction: int
    old_state: int
    new_state: int
    transitions: int


class RetiredEvent(NamedTuple):
    """The segment that ended a TCP connection in the kernel took its entries out of the map."""

    ts_ns: int
    proto: int
    key: bytes        # the entry whose segment ended it, as FlowEvent.key
    direction: int
    deleted: int      # bit (1 << direction): that direction's entry was taken out
    counts: tuple[tuple[int, int, int], tuple[int, int, int]]  # by direction: packets, bytes, last_seen_ns


def engine_key(key: bytes) -> tuple[int, bytes]:
    """(protocol, the key as the engine's tables hold it) of a packed flow key."""
    family, proto, _pad, saddr, daddr, sport, dport = KEY.unpack(key)
    if family != AF_INET6:
        saddr, daddr = saddr[12:], daddr[12:]  # IPv4-mapped in the map
    return proto, saddr + daddr + sport + dport


# EVENT with its key's fields in line: the most frequent event decoded in one step.
_EVENT_FLAT = struct.Struct("=" + "".join(
    "".join(c for _, c, _ in KEY_FIELDS) if name == "key" else code for name, code, _ in EVENT_FIELDS))


def decode(raw: bytes) -> FlowEvent | SchedEvent | RetiredEvent | None:
    """One record of the ring; None for a size this program never reports (counted by the reader)."""
    size = len(raw)
    if size == _EVENT_FLAT.size:
        ts_ns, family, proto, _pad, saddr, daddr, sport, dport, flags, direction, old, new, transitions = (
            _EVENT_FLAT.unpack(raw))
        if family != AF_INET6:
            saddr, daddr = saddr[12:], daddr[12:]  # IPv4-mapped in the map
        return FlowEvent(ts_ns, proto, saddr + daddr + sport + dport, flags, direction, old, new, transitions)
    if size == SCHED_EVENT.size:
        return decode_created(raw)
    if size == RETIRED.size:
        ts_ns, key, direction, deleted, _pad, p0, p1, b0, b1, s0, s1 = RETIRED.unpack(raw)
        return RetiredEvent(ts_ns, *engine_key(key), direction, deleted, ((p0, b0, s0), (p1, b1, s1)))
    return None


def decode_created(raw: bytes) -> SchedEvent:
    ts_ns, key, _flags, _direction, _old, _new, _transitions, gen, slot, dest, raddr, rport, hw, ifindex = (
        SCHED_EVENT.unpack(raw))
    _family, _proto, _pad, saddr, daddr, sport, dport = KEY.unpack(key)
    return SchedEvent(ts_ns, saddr[12:] + daddr[12:] + sport + dport, gen, slot, dest, raddr, rport, hw, ifindex)


class EventRing:
    """The consumer side of the program's ring buffer map (by its file descriptor)."""

    def __init__(self, lib: Libbpf, map_fd: int) -> None:
        self.lib = lib
        self._raw: list[bytes] = []
        self.unknown = 0  # records of a size no event has

        def sample(_ctx: int, data: int, size: int) -> int:
            self._raw.append(ctypes.string_at(data, size))
            return 0

        self._callback = RING_SAMPLE_FN(sample)  # kept alive with this object
        self._ring = lib.pointer(lib.ring_buffer__new(map_fd, self._callback, None, None), "opening the event ring")
        self._fd = lib.check(lib.ring_buffer__epoll_fd(self._ring), "polling the event ring")

    def fileno(self) -> int:
        """An epoll descriptor that is readable while events wait."""
        return self._fd

    def read(self) -> list[FlowEvent | SchedEvent | RetiredEvent]:
        """Every event waiting, oldest first (none: an empty list, without a system call)."""
        self.lib.check(self.lib.ring_buffer__consume(self._ring), "reading the event ring")
        raw, self._raw = self._raw, []
        events = [decode(r) for r in raw]
        if None in events:  # (a program of another version left attached): never seen, so never applied
            self.unknown += events.count(None)
            events = [e for e in events if e is not None]
        return events

    def close(self) -> None:
        if self._ring:
            self.lib.ring_buffer__free(self._ring)
            self._ring = None
