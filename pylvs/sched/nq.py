"""Never queue (ip_vs_nq.c): an idle server (no active connection) is taken at once, else sed."""

from __future__ import annotations

from pylvs.engine.services import RealServer
from pylvs.sched.base import usable
from pylvs.sched.least import LeastScheduler, ratio
from pylvs.sched.sed import expected_delay
from pylvs.sched.tracking import USABILITY


def never_queue(dests: list[RealServer]) -> RealServer | None:
    """The nq loop: the first idle usable dest, else the smallest (active + 1) / weight."""
    least: RealServer | None = None
    loh = 0
    for dest in dests:
        if not usable(dest):
            continue
        doh = expected_delay(dest)
        if dest.activeconns == 0:
            return dest  # the first idle server, whatever its weight
        if least is None or loh * dest.weight > doh * least.weight:
            least, loh = dest, doh
    return least


class NeverQueue(LeastScheduler):
    name = "nq"
    watched = USABILITY | {"activeconns"}

    @staticmethod
    def key(dest: RealServer) -> float | object | None:
        # Idle dests all key 0, so the earliest idle one wins; a busy one's key is at least 2 / weight.
        if dest.weight > 0 and not dest.overloaded and dest.available:
            active = dest.activeconns
            return 0 if active == 0 else ratio(active + 1, dest.weight)
        return None

    scan = staticmethod(never_queue)
