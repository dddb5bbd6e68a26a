"""Weighted round robin (ip_vs_wrr.c).

Passes over the list with a falling weight threshold `cw`: a pass takes every dest whose weight is
at least `cw`, then `cw` drops by `di` (the gcd of the weights) until it wraps back to `mw`. With
A=4, B=3, C=2 that gives A A B A B C A B C.

Instead of stepping through the list, a pass jumps to the next dest that passes the threshold: the
usable dests are kept sorted by weight, the ones at or above `cw` are a prefix of that order, and
that prefix sorted by list rank (cached while the prefix stays the same) is bisected.

`period` and `advance_to` let a second data path continue the sequence (pylvs.datapath.bpf.ksched).
"""

from __future__ import annotations

from bisect import bisect_right
from math import gcd, inf
from operator import itemgetter

from pylvs.engine.services import RealServer, VirtualService
from pylvs.sched.base import Flow, usable
from pylvs.sched.tracking import USABILITY, SortedIndex, TrackedScheduler


def heaviest_first(dest: RealServer, rank: int) -> tuple[int, int] | None:
    return (-dest.weight, rank) if usable(dest) else None


class WeightedRoundRobin(TrackedScheduler):
    name = "wrr"
    watched = USABILITY

    def __init__(self, service: VirtualService) -> None:
        self.pos: int | None = None  # cursor: rank of the last choice; None = the list head
        self.cw = 0  # current weight threshold
        self.mw = 0  # max weight - (di - 1), so that the last pass is at cw = 1
        self.di = 1  # gcd of the positive weights
        self.index = SortedIndex(heaviest_first)  # usable dests by weight, heaviest first
        self.pass_cw = 0  # the threshold the cached pass is for
        self.pass_size = -1  # how many dests the cached pass holds (-1: none cached)
        self.pass_version = -1
        self.pass_ranks: list[int] = []  # ranks of the dests with weight >= cw, in list order
        super().__init__(service)

    def update(self, service: VirtualService) -> None:
        super().update(service)
        weights = [d.weight for d in service.dests]
        self.di = gcd(*(w for w in weights if w > 0)) or 1
        self.mw = max(weights, default=0) - (self.di - 1)
        self.pos = None  # the kernel restarts from the head after any change
        # The kernel's ip_vs_wrr_dest_changed; with cw == 0 this is also the initial cw = mw.
        if self.cw > self.mw or not self.cw:
            self.cw = self.mw
        elif self.di > 1:
            self.cw = (self.cw // self.di) * self.di + 1

    def _pass(self, cw: int) -> list[int]:
        """Ranks of the usable dests with weight >= cw, in list order (cached while cw and the
        dests stay the same)."""
        if cw != self.pass_cw or self.pass_version != self.index.version:
            keys = self.index.keys
            size = bisect_right(keys, (-cw, inf))
            if size != self.pass_size or self.pass_version != self.index.version:
                self.pass_ranks = sorted(map(itemgetter(1), keys[:size]))
                self.pass_size = size
            self.pass_cw, self.pass_version = cw, self.index.version
        return self.pass_ranks

    def schedule(self, service: VirtualService, flow: Flow) -> RealServer | None:
        if self.mw == 0:
            return None
        if self.changed:
            self.refresh()
        keys = self.index.keys
        heaviest = -keys[0][0] if keys else 0  # the largest usable weight
        last = self.pos
        start = last  # this pass looks after `start` (None: from the head)
        stop: int | None = None  # once set: give up if nothing qualifies up to this rank
        last_pass = restarted = False
        while True:
            ranks = self._pass(self.cw)
            i = 0 if start is None else bisect_right(ranks, start)
            found = ranks[i] if i < len(ranks) else None
            if stop is not None and (found is None or found > stop):
                self.pos = stop
                return None
            if found is not None:
                self.pos = found
                return self.tracker.at[found]
            start = None
            self.cw -= self.di
            if self.cw <= 0:
                self.cw = self.mw
                # The pass at cw <= di (weights >= 1) already covered the whole list.
                if last_pass or last is None:
                    self.pos = None
                    return None
                restarted = True
            if self.cw > heaviest >= self.di:
                # Passes above every usable weight find nothing: drop cw to the first pass that can
                # (it stays above 0 and no skipped pass was a last pass, since heaviest >= di).
                self.cw -= (self.cw - heaviest + self.di - 1) // self.di * self.di
            last_pass = self.cw <= self.di
            if last_pass and restarted and last is not None:
                # The first weight >= 1 pass only covered the dests after `last`; finish at it.
                stop = last

    def period(self, limit: int) -> list[tuple[RealServer, int]] | None:
        """The choices from here on while the usable dests and weights stay: one period (a pass per
        threshold, sum(weights) / gcd choices), the next choice first, each as the arguments of
        `advance_to` that moves the cursor past it; None if longer than `limit`."""
        if self.changed:
            self.refresh()
        keys = self.index.keys  # (-weight, rank), heaviest first
        if self.mw <= 0 or not keys:
            return []
        mw, di = self.mw, self.di
        last_k = (mw - 1) // di  # the thresholds are mw - k * di for k = 0 .. last_k

        def first_k(weight: int) -> int:  # the first threshold a dest of this weight passes
            return max(0, -((weight - mw) // di))

        if sum(max(0, last_k - first_k(-w) + 1) for w, _ in keys) > limit:
            return None
        by_rank = sorted((rank, -w) for w, rank in keys)
        seq = [(rank, cw) for k in range(first_k(-keys[0][0]), last_k + 1)
               for cw in (mw - k * di,) for rank, w in by_rank if w >= cw]
        cw, pos = self.cw, self.pos
        start = next((i for i, (rank, c) in enumerate(seq)
                      if c < cw or (c == cw and (pos is None or rank > pos))), 0)
        at = self.tracker.at
        return [(at[rank], c) for rank, c in seq[start:] + seq[:start]]

    def advance_to(self, dest: RealServer, cw: int) -> None:
        """Continue after `dest` chosen at threshold `cw`, a choice another data path made in this
        sequence."""
        rank = self.tracker.rank.get(dest)
        if rank is not None:
            self.pos, self.cw = rank, cw
