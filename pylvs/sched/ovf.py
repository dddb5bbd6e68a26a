"""Weighted overflow (ip_vs_ovf.c): the highest-weight server until its active conns exceed its weight.

Only active connections count, so UDP (always inactive) never overflows (ipvs.md §8.9).
"""

from __future__ import annotations

from pylvs.engine.services import RealServer
from pylvs.sched.least import LeastScheduler
from pylvs.sched.tracking import USABILITY


class WeightedOverflow(LeastScheduler):
    name = "ovf"
    watched = USABILITY | {"activeconns"}

    @staticmethod
    def key(dest: RealServer) -> int | None:
        # ties keep the earlier dest (strict > in the kernel): the lowest rank among equal keys
        if dest.weight > 0 and not dest.overloaded and dest.available and dest.activeconns <= dest.weight:
            return -dest.weight
        return None
