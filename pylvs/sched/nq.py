"""Never queue (ip_vs_nq.c): an idle server (no active connection) is taken at once, else sed."""

from __future__ import annotations

from pylvs.engine.services import RealServer, VirtualService
from pylvs.sched.base import Flow, Scheduler, usable
from pylvs.sched.sed import expected_delay


class NeverQueue(Scheduler):
    name = "nq"

    def schedule(self, service: VirtualService, flow: Flow) -> RealServer | None:
        least: RealServer | None = None
        loh = 0
        for dest in service.dests:
            if not usable(dest):
                continue
            doh = expected_delay(dest)
            if dest.activeconns == 0:
                return dest  # the first idle server, whatever its weight
            if least is None or loh * dest.weight > doh * least.weight:
                least, loh = dest, doh
        return least
