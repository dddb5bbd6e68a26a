"""Round robin (ip_vs_rr.c): walk the list from the last choice, take the next usable dest.

The usable dests' ranks are kept sorted, so "the next usable one after the cursor" is one bisect.
`period` and `advance_to` let a second data path continue the sequence (pylvs.datapath.bpf.ksched).
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
        dest = self.tracker.at[keys[self._next()][0]]
        self.last = dest
        return dest

    def _next(self) -> int:
        """Where in the usable dests the next choice is (the index is fresh and not empty)."""
        keys = self.index.keys
        i = 0 if self.last is None else bisect_right(keys, (self.tracker.rank[self.last], inf))
        return i if i < len(keys) else 0

    def period(self, limit: int) -> list[tuple[RealServer]] | None:
        """The choices from here on while the usable dests stay (one turn, the next choice first), each
        as the arguments of `advance_to` that moves the cursor past it; None if longer than `limit`."""
        if self.changed:
            self.refresh()
        keys = self.index.keys
        if len(keys) > limit:
            return None
        i = self._next() if keys else 0
        return [(self.tracker.at[rank],) for rank, _ in keys[i:] + keys[:i]]

    def advance_to(self, dest: RealServer) -> None:
        """Continue after `dest`, a choice another data path made in this sequence."""
        if dest in self.tracker.rank:
            self.last = dest
