"""Shortest expected delay (ip_vs_sed.c): wlc on (active + 1); inactive connections are ignored."""

from __future__ import annotations

from pylvs.engine.services import RealServer, VirtualService
from pylvs.sched.base import Flow, Scheduler
from pylvs.sched.wlc import weighted_least


def expected_delay(dest: RealServer) -> int:
    """The sed/nq overhead: the new connection waits behind every active one."""
    return dest.activeconns + 1


class ShortestExpectedDelay(Scheduler):
    name = "sed"

    def schedule(self, service: VirtualService, flow: Flow) -> RealServer | None:
        return weighted_least(service.dests, expected_delay)
