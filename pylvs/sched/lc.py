"""Least-connection (ip_vs_lc.c): the smallest overhead wins; weight only matters as 0 = quiesced."""

from __future__ import annotations

from pylvs.engine.services import RealServer, VirtualService
from pylvs.sched.base import Flow, Scheduler, usable
from pylvs.sched.wlc import overhead


class LeastConnection(Scheduler):
    name = "lc"

    def schedule(self, service: VirtualService, flow: Flow) -> RealServer | None:
        least: RealServer | None = None
        loh = 0
        for dest in service.dests:
            if not usable(dest):
                continue
            doh = overhead(dest)
            if least is None or doh < loh:  # strict: the earlier dest keeps a tie
                least, loh = dest, doh
        return least
