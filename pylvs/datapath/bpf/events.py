"""The fast path's event ring from Python: the TCP state changes the kernel made, in order.

The program reports every state change it makes while forwarding a segment by a recipe (a FIN, a
RST, the ACK that ends LAST_ACK) on a BPF ring buffer (pylvs_events). `EventRing` reads it through
libbpf: `fileno()` is pollable with the director's other sockets, `read()` returns the events
waiting, oldest first, as `FlowEvent`s (layout: pylvs.engine.flow.EVENT).
"""

from __future__ import annotations

import ctypes
from typing import NamedTuple

from pylvs.datapath.bpf.libbpf import RING_SAMPLE_FN, Libbpf
from pylvs.engine.flow import EVENT, KEY
from pylvs.ipvs_uapi import AF_INET6


class FlowEvent(NamedTuple):
    ts_ns: int
    proto: int
    key: bytes        # the segment's key as the engine's tables hold it: saddr, daddr (4 or 16 bytes), ports
    tcp_flags: int
    direction: int
    old_state: int
    new_state: int
    transitions: int


def decode(raw: bytes) -> FlowEvent:
    ts_ns, key, flags, direction, old, new, transitions = EVENT.unpack_from(raw)
    family, proto, _pad, saddr, daddr, sport, dport = KEY.unpack(key)
    if family != AF_INET6:
        saddr, daddr = saddr[12:], daddr[12:]  # IPv4-mapped in the map
    return FlowEvent(ts_ns, proto, saddr + daddr + sport + dport, flags, direction, old, new, transitions)


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
