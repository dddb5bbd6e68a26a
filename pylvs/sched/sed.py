"""Shortest expected delay (ip_vs_sed.c): wlc on (active + 1); inactive connections are ignored."""

from __future__ import annotations

from pylvs.engine.services import RealServer
from pylvs.sched.least import LeastScheduler, ratio
from pylvs.sched.tracking import USABILITY
from pylvs.sched.wlc import weighted_least


def expected_delay(dest: RealServer) -> int:
    """The sed/nq overhead: the new connection waits behind every active one."""
    return dest.activeconns + 1


class ShortestExpectedDelay(LeastScheduler):
    name = "sed"
    watched = USABILITY | {"activeconns"}

    @staticmethod
    def key(dest: RealServer) -> float | object | None:
        if dest.weight > 0 and not dest.overloaded and dest.available:
            return ratio(dest.activeconns + 1, dest.weight)
        return None

    @staticmethod
    def scan(dests: list[RealServer]) -> RealServer | None:
        return weighted_least(dests, expected_delay)
