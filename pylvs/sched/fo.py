"""Weighted failover (ip_vs_fo.c): always the highest-weight usable server; load is ignored."""

from __future__ import annotations

from pylvs.engine.services import RealServer, VirtualService
from pylvs.sched.base import Flow, Scheduler, usable


class WeightedFailover(Scheduler):
    name = "fo"

    def schedule(self, service: VirtualService, flow: Flow) -> RealServer | None:
        best: RealServer | None = None
        for dest in service.dests:
            # strict: the earlier (newest-added) dest keeps a tie
            if usable(dest) and (best is None or dest.weight > best.weight):
                best = dest
        return best
