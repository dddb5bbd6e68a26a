"""Round robin (ip_vs_rr.c): walk the list from the last choice, take the next usable dest.

The usable dests' ranks are kept sorted, so "the next usable one after the cursor" is one bisect.
"""

from __future__ import annotations

from bisect import bisect_right
from math import inf

from pylvs.engine.services import RealServer, VirtualService
from pylvs.sched.base import Flow, usable
from pylvs.sched.tracking import USABILITY, SortedIndex, TrackedScheduler


def usable_in_order(dest: RealServer, rank: int) -> tuple[int, int] | None:
    """Key of the usable dests in list order; the weight rides along for twos' cumulative sums."""
    return (rank, dest.weight) if usable(dest) else None


class RoundRobin(TrackedScheduler):
    name = "rr"
    watched = USABILITY

    def __init__(self, service: VirtualService) -> None:
        self.last: RealServer | None = None  # None = the list head, as the kernel's sched_data
        self.index = SortedIndex(usable_in_order)  # usable dests in list order
        super().__init__(service)

    def update(self, service: VirtualService) -> None:
        # A deleted cursor moves to its predecessor (the kernel's ip_vs_rr_del_dest).
        if self.last is not None and self.last not in service.dests:
            old = self.tracker.dests
            i = old.index(self.last)
            self.last = next((d for d in reversed(old[:i]) if d in service.dests), None)
        super().update(service)

    def schedule(self, service: VirtualService, flow: Flow) -> RealServer | None:
        if self.changed:
            self.refresh()
        keys = self.index.keys
        if not keys:
            return None
        i = 0 if self.last is None else bisect_right(keys, (self.tracker.rank[self.last], inf))
        dest = self.tracker.at[keys[i if i < len(keys) else 0][0]]
        self.last = dest
        return dest
