"""The fast path's event ring from Python: the TCP state changes the kernel made, in order.

The program reports every state change it makes while forwarding a segment by a recipe (a FIN, a
RST, the ACK that ends LAST_ACK) on a BPF ring buffer (pylvs_events). `EventRing` reads it through
libbpf: `fileno()` is pollable with the director's other sockets, `read()` returns the events
waiting, oldest first, as `FlowEvent`s (layout: pylvs.engine.flow.EVENT), and the connections the
program scheduled itself as `SchedEvent`s (CREATED, pylvs_sched.bpf.h), told apart by their size.
"""

from __future__ import annotations

import ctypes
import struct
from typing import NamedTuple

from pylvs.datapath.bpf.libbpf import RING_SAMPLE_FN, Libbpf
from pylvs.engine.flow import EVENT, EVENT_FIELDS, KEY
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


def decode(raw: bytes) -> FlowEvent | SchedEvent:
    if len(raw) == SCHED_EVENT.size:
        return decode_created(raw)
    ts_ns, key, flags, direction, old, new, transitions = EVENT.unpack_from(raw)
    family, proto, _pad, saddr, daddr, sport, dport = KEY.unpack(key)
    if family != AF_INET6:
        saddr, daddr = saddr[12:], daddr[12:]  # IPv4-mapped in the map
    return FlowEvent(ts_ns, proto, saddr + daddr + sport + dport, flags, direction, old, new, transitions)


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

        def sample(_ctx: int, data: int, size: int) -> int:
            self._raw.append(ctypes.string_at(data, size))
            return 0

        self._callback = RING_SAMPLE_FN(sample)  # kept alive with this object
        self._ring = lib.pointer(lib.ring_buffer__new(map_fd, self._callback, None, None), "opening the event ring")
        self._fd = lib.check(lib.ring_buffer__epoll_fd(self._ring), "polling the event ring")

    def fileno(self) -> int:
        """An epoll descriptor that is readable while events wait."""
        return self._fd

    def read(self) -> list[FlowEvent]:
        """Every event waiting, oldest first (none: an empty list, without a system call)."""
        self.lib.check(self.lib.ring_buffer__consume(self._ring), "reading the event ring")
        raw, self._raw = self._raw, []
        return [decode(r) for r in raw]

    def close(self) -> None:
        if self._ring:
            self.lib.ring_buffer__free(self._ring)
            self._ring = None
