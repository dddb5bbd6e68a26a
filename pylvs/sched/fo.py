"""Weighted failover (ip_vs_fo.c): always the highest-weight usable server; load is ignored."""

from __future__ import annotations

from pylvs.engine.services import RealServer
from pylvs.sched.least import LeastScheduler
from pylvs.sched.tracking import USABILITY


class WeightedFailover(LeastScheduler):
    name = "fo"
    watched = USABILITY

    @staticmethod
    def key(dest: RealServer) -> int | None:
        # the kernel keeps the first of equal weights (strict >): the lowest rank among equal keys
        if dest.weight > 0 and not dest.overloaded and dest.available:
            return -dest.weight
        return None
