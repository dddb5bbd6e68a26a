"""The fast path's event ring from Python: the TCP state changes the kernel made, in order.

The program reports every state change it makes while forwarding a segment by a recipe (a FIN, a
RST, the ACK that ends LAST_ACK) on a BPF ring buffer (pylvs_events). `EventRing` reads it (on x86-64
straight from the ring's pages mapped into lvsd, elsewhere through libbpf): `fileno()` is pollable
with the director's other sockets, `read()` returns the events waiting, oldest first, as `FlowEvent`s
(layout: pylvs.engine.flow.EVENT), the connections the program scheduled itself as `SchedEvent`s
(CREATED, pylvs_sched.bpf.h) and the connections whose entries it took out as they ended as
`RetiredEvent`s (pylvs.engine.flow.RETIRED), told apart by size.
"""

from __future__ import annotations

import ctypes
import logging
import mmap
import platform
import struct
from typing import NamedTuple

from pylvs.datapath.bpf.libbpf import RING_SAMPLE_FN, Libbpf
from pylvs.engine.flow import EVENT_FIELDS, KEY, KEY_FIELDS, RETIRED_FIELDS
from pylvs.ipvs_uapi import AF_INET6

log = logging.getLogger(__name__)

# CREATED (struct pylvs_ksched_event): a pylvs_flow_event, then gen, slot, dest index, raddr, rport, and
# the MAC and interface NAT's reply entry sends to, rr/wrr's cursor value, FULLNAT's local address and port.
SCHED_EVENT = struct.Struct("=" + "".join(code for _, code, _ in EVENT_FIELDS) + "III16s2s6sIQ4s2s2x")


class SchedEvent(NamedTuple):
    """CREATED: the program scheduled a SYN itself (pylvs_sched.bpf.h) and made the connection's entries."""

    ts_ns: int
    key: bytes        # the SYN's key as FlowEvent.key (client, VIP, client port, VIP port)
    gen: int          # the publication it scheduled by (pylvs.datapath.bpf.ksched)
    slot: int
    dest: int         # the destination's index in the service as published
    raddr: bytes      # the real server (4 or 16 bytes, as the key's) and the port the reply entry is keyed by
    rport: bytes
    hw: bytes         # NAT: the SYN's source MAC and ingress interface, the reply entry's next hop
    ifindex: int
    cursor: int       # rr, wrr: the position in the published sequence it took (modulo its length)
    laddr: bytes      # FULLNAT: the local address (IPv4) and port it took; b"" for the other methods
    lport: bytes


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


# EVENT and RETIRED with their keys' fields in line: each decoded in one step.
def _flat(fields: tuple[tuple[str, str, str], ...]) -> struct.Struct:
    return struct.Struct("=" + "".join(
        "".join(c for _, c, _ in KEY_FIELDS) if name == "key" else code for name, code, _ in fields))


_EVENT_FLAT = _flat(EVENT_FIELDS)
_RETIRED_FLAT = _flat(RETIRED_FIELDS)
_tuple_new = tuple.__new__  # builds a NamedTuple without the Python-level __new__ (a frame per event)


def decode(raw: bytes) -> FlowEvent | SchedEvent | RetiredEvent | None:
    """One record of the ring; None for a size this program never reports (counted by the reader)."""
    size = len(raw)
    if size == _EVENT_FLAT.size:
        ts_ns, family, proto, _pad, saddr, daddr, sport, dport, flags, direction, old, new, transitions = (
            _EVENT_FLAT.unpack(raw))
        if family != AF_INET6:
            saddr, daddr = saddr[12:], daddr[12:]  # IPv4-mapped in the map
        return _tuple_new(FlowEvent, (ts_ns, proto, saddr + daddr + sport + dport, flags, direction, old, new,
                                transitions))
    if size == SCHED_EVENT.size:
        return decode_created(raw)
    if size == _RETIRED_FLAT.size:
        ts_ns, family, proto, _pad, saddr, daddr, sport, dport, direction, deleted, _pad2, p0, p1, b0, b1, s0, s1 = (
            _RETIRED_FLAT.unpack(raw))
        if family != AF_INET6:
            saddr, daddr = saddr[12:], daddr[12:]
        return _tuple_new(RetiredEvent, (ts_ns, proto, saddr + daddr + sport + dport, direction, deleted,
                                   ((p0, b0, s0), (p1, b1, s1))))
    return None


def decode_created(raw: bytes) -> SchedEvent:
    (ts_ns, key, _flags, _direction, _old, _new, _transitions, gen, slot, dest, raddr, rport, hw, ifindex, cursor,
     laddr, lport) = SCHED_EVENT.unpack(raw)
    if key[0] != AF_INET6:
        raddr = raddr[12:]  # IPv4-mapped
    if laddr == _NO_LADDR:
        laddr = lport = b""
    return _tuple_new(SchedEvent, (ts_ns, engine_key(key)[1], gen, slot, dest, raddr, rport, hw, ifindex,
                                   cursor, laddr, lport))


_NO_LADDR = bytes(4)


class EventRing:
    """The consumer side of the program's ring buffer map (by its file descriptor and size in bytes)."""

    def __init__(self, lib: Libbpf, map_fd: int, size: int) -> None:
        self.lib = lib
        self.unknown = 0  # records of a size no event has
        self._ring = None
        self._mapped: _MappedRing | None = None
        if platform.machine() == "x86_64":
            self._mapped = _MappedRing(map_fd, size)
            self._fd = map_fd  # readable while records wait (the map's poll)
            return
        self._raw: list[bytes] = []

        def sample(_ctx: int, data: int, size: int) -> int:
            self._raw.append(ctypes.string_at(data, size))
            return 0

        self._callback = RING_SAMPLE_FN(sample)  # kept alive with this object
        self._ring = lib.pointer(lib.ring_buffer__new(map_fd, self._callback, None, None), "opening the event ring")
        self._fd = lib.check(lib.ring_buffer__epoll_fd(self._ring), "polling the event ring")

    def fileno(self) -> int:
        """A descriptor that is readable while events wait."""
        return self._fd

    def read(self) -> list[FlowEvent | SchedEvent | RetiredEvent]:
        """Every event waiting, oldest first (none: an empty list, without a system call)."""
        if self._mapped is not None:
            raw = self._mapped.records()
        else:
            self.lib.check(self.lib.ring_buffer__consume(self._ring), "reading the event ring")
            raw, self._raw = self._raw, []
        events = [decode(r) for r in raw]
        if None in events:  # (a program of another version left attached): never seen, so never applied
            if not self.unknown:
                log.warning("fast path: the event ring carries records of a size this lvsd does not know "
                            "(a program of another version?); they are skipped")
            self.unknown += events.count(None)
            events = [e for e in events if e is not None]
        return events

    def close(self) -> None:
        if self._mapped is not None:
            self._mapped.close()
            self._mapped = None
        if self._ring:
            self.lib.ring_buffer__free(self._ring)
            self._ring = None


_U32 = struct.Struct("=I")
_U64 = struct.Struct("=Q")
_BUSY = 1 << 31     # BPF_RINGBUF_BUSY_BIT: reserved, not submitted yet
_DISCARD = 1 << 30  # BPF_RINGBUF_DISCARD_BIT
_HEADER = 8         # BPF_RINGBUF_HDR_SZ: the length word and the page offset


class _MappedRing:
    """The ring's pages mapped into lvsd, as libbpf maps them, and its records read in place: no call
    from C into Python per record (libbpf's callback cost more than decoding the event). The consumer
    page (writable) holds how far we have read; the producer page, then the data pages mapped twice
    over, so a record that wraps at the end reads as one. x86-64 only: its ordering of loads and of
    stores gives what libbpf's acquire loads and release store do elsewhere."""

    def __init__(self, map_fd: int, size: int) -> None:
        page = mmap.PAGESIZE
        self._consumer = mmap.mmap(map_fd, page, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE, offset=0)
        self._producer = mmap.mmap(map_fd, page + 2 * size, mmap.MAP_SHARED, mmap.PROT_READ, offset=page)
        self._data = page  # where the data pages start in the producer mapping
        self._mask = size - 1

    def records(self) -> list[bytes]:
        """The submitted records waiting, oldest first, consumed (discarded ones skipped)."""
        (cons,) = _U64.unpack_from(self._consumer)
        (prod,) = _U64.unpack_from(self._producer)
        out: list[bytes] = []
        if cons == prod:
            return out
        ring, data, mask = self._producer, self._data, self._mask
        while cons < prod:
            at = data + (cons & mask)
            (length,) = _U32.unpack_from(ring, at)
            if length & _BUSY:
                break  # reserved and not yet submitted: the records after it wait for it
            size = length & ~(_BUSY | _DISCARD)
            if not length & _DISCARD:
                out.append(ring[at + _HEADER:at + _HEADER + size])
            cons += (size + _HEADER + 7) & ~7
        _U64.pack_into(self._consumer, 0, cons)
        return out

    def close(self) -> None:
        self._consumer.close()
        self._producer.close()
