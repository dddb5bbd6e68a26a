"""Least-connection (ip_vs_lc.c): the smallest overhead wins; weight only matters as 0 = quiesced."""

from __future__ import annotations

from pylvs.engine.services import RealServer
from pylvs.sched.least import LeastScheduler


class LeastConnection(LeastScheduler):
    name = "lc"

    @staticmethod
    def key(dest: RealServer) -> int | None:
        if dest.weight > 0 and not dest.overloaded and dest.available:
            return (dest.activeconns << 8) + dest.inactconns  # an int: always exact, no fallback scan
        return None
