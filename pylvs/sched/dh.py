"""Destination hashing (ip_vs_dh.c): a static 256-bucket table keyed by the packet's destination IP.

Used in front of cache clusters: one destination address always maps to the same real server. If
that server is unusable there is no fallback (the connection is refused).
"""

from __future__ import annotations

from pylvs.engine.services import RealServer, VirtualService
from pylvs.sched.base import Flow, Scheduler, usable

TAB_BITS = 8  # CONFIG_IP_VS_DH_TAB_BITS
TAB_SIZE = 1 << TAB_BITS


def hash_32(val: int, bits: int) -> int:
    """The kernel's multiplicative hash_32 (include/linux/hash.h) of the low 32 bits of `val`."""
    return ((val * 0x61C88647) & 0xFFFFFFFF) >> (32 - bits)


class DestinationHashing(Scheduler):
    name = "dh"

    def __init__(self, service: VirtualService) -> None:
        self.table: list[RealServer | None] = [None] * TAB_SIZE
        super().__init__(service)

    def update(self, service: VirtualService) -> None:
        # Weights are ignored: the dests take one bucket each, round after round (ipvs.md §8.12).
        dests = service.dests
        n = len(dests)
        self.table = [dests[i % n] for i in range(TAB_SIZE)] if n else [None] * TAB_SIZE

    def schedule(self, service: VirtualService, flow: Flow) -> RealServer | None:
        dest = self.table[hash_32(int.from_bytes(flow.daddr, "big"), TAB_BITS)]
        return dest if dest is not None and usable(dest) else None
