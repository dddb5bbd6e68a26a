"""The base of the least-something schedulers (lc, wlc, sed, nq, fo, ovf): a smallest-key index.

Each of them is, in the kernel, one loop over the list keeping the first dest with the best value;
here the same choice comes from a `LeastIndex` keyed by that value and the list rank.
"""

from __future__ import annotations

from typing import Any

from pylvs.engine.services import RealServer, VirtualService
from pylvs.sched.base import Flow
from pylvs.sched.tracking import INEXACT, LeastIndex, TrackedScheduler

# Ratios a / w with 0 <= a < 2**31 and 0 < w < 2**21 order exactly as doubles (two different ones
# differ by at least 1 / (w1 * w2), far more than the rounding error), so the kernel's
# division-free comparison `a1 * w2 > a2 * w1` and the float comparison always agree.
NUM_BITS = 31
WEIGHT_BITS = 21


def ratio(num: int, weight: int) -> float | object:
    """num / weight as an exactly ordered float key, or INEXACT when out of the safe range."""
    if num >> NUM_BITS or weight >> WEIGHT_BITS:  # also catches negative counts
        return INEXACT
    return num / weight


class LeastScheduler(TrackedScheduler):
    """The usable dest with the smallest `key`, ties to the earliest in the list."""

    @staticmethod
    def key(dest: RealServer) -> Any:
        """The kernel's value for `dest`, smaller is better; None if it may not be chosen."""
        raise NotImplementedError

    @staticmethod
    def scan(dests: list[RealServer]) -> RealServer | None:
        """The kernel's loop, for when some key is INEXACT (only schedulers with ratio keys need it)."""
        raise NotImplementedError

    def __init__(self, service: VirtualService) -> None:
        self.index: LeastIndex = LeastIndex(self.key)
        super().__init__(service)

    def schedule(self, service: VirtualService, flow: Flow) -> RealServer | None:
        if self.changed:
            self.refresh()
        index = self.index
        if index.inexact:
            return self.scan(service.dests)
        return index.least()
