"""Source hashing (ip_vs_sh.c): a 256-bucket table keyed by the client address (and port).

Each dest fills `weight` consecutive buckets per round (a weight-0 dest still one, which is then
unusable). Flags: sh-fallback (SVC_F_SCHED1) walks the table for a usable dest instead of refusing;
sh-port (SVC_F_SCHED2) adds the client's source port to the key.
"""

from __future__ import annotations

from pylvs.engine.services import SVC_F_SCHED1, SVC_F_SCHED2, RealServer, VirtualService
from pylvs.sched.base import Flow, Scheduler, usable
from pylvs.sched.dh import addr_fold, hash_32

TAB_BITS = 8  # CONFIG_IP_VS_SH_TAB_BITS
TAB_SIZE = 1 << TAB_BITS
TAB_MASK = TAB_SIZE - 1

SH_FALLBACK = SVC_F_SCHED1
SH_PORT = SVC_F_SCHED2

# Only these carry ports where the kernel looks for them (ip_vs_sh_get_port / ip_vs_mh_get_port).
PORT_PROTOCOLS = frozenset({6, 17, 132})  # TCP, UDP, SCTP


def hash_port(service: VirtualService, flow: Flow) -> int:
    """The source port to mix into the key: only with sh-port / mh-port (the same flag bit)."""
    if service.flags & SVC_F_SCHED2 and flow.protocol in PORT_PROTOCOLS:
        return flow.sport
    return 0


class SourceHashing(Scheduler):
    name = "sh"

    def __init__(self, service: VirtualService) -> None:
        self.table: list[RealServer | None] = [None] * TAB_SIZE
        super().__init__(service)

    def update(self, service: VirtualService) -> None:
        dests = service.dests
        if not dests:
            self.table = [None] * TAB_SIZE
            return
        table: list[RealServer | None] = []
        i = count = 0
        while len(table) < TAB_SIZE:
            dest = dests[i]
            table.append(dest)
            count += 1
            if count >= dest.weight:  # weight 0 or 1: one bucket, then the next dest
                i = (i + 1) % len(dests)
                count = 0
        self.table = table

    def schedule(self, service: VirtualService, flow: Flow) -> RealServer | None:
        key = hash_port(service, flow) + addr_fold(flow.saddr)
        ihash = hash_32(key, TAB_BITS)
        dest = self.table[ihash]
        if dest is None:
            return None
        if usable(dest):
            return dest
        if not service.flags & SH_FALLBACK:
            return None
        # The kernel's fallback walk: offset o probes bucket (o + 2 * ihash) mod 256.
        for offset in range(TAB_SIZE):
            roffset = (offset + ihash) % TAB_SIZE
            dest = self.table[(roffset + ihash) & TAB_MASK]
            if dest is None:
                break
            if usable(dest):
                return dest
        return None
