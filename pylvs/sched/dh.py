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


def addr_fold(addr: bytes) -> int:
    """The address as the kernel's *_hashkey take it (host order): an IPv6 address folds its four
    32-bit words together with XOR (ip6[0] ^ ip6[1] ^ ip6[2] ^ ip6[3])."""
    value = int.from_bytes(addr, "big")
    if len(addr) == 16:
        value ^= value >> 64
        value ^= value >> 32
        value &= 0xFFFFFFFF
    return value


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
        dest = self.table[hash_32(addr_fold(flow.daddr), TAB_BITS)]
        return dest if dest is not None and usable(dest) else None
