"""Weighted overflow (ip_vs_ovf.c): the highest-weight server until its active conns exceed its weight.

Only active connections count, so UDP (always inactive) never overflows (ipvs.md §8.9).
"""

from __future__ import annotations

from pylvs.engine.services import RealServer, VirtualService
from pylvs.sched.base import Flow, Scheduler, usable


class WeightedOverflow(Scheduler):
    name = "ovf"

    def schedule(self, service: VirtualService, flow: Flow) -> RealServer | None:
        best: RealServer | None = None
        for dest in service.dests:
            if not usable(dest) or dest.activeconns > dest.weight:
                continue
            if best is None or dest.weight > best.weight:  # strict: ties keep the earlier dest
                best = dest
        return best
