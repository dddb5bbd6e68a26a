"""Weighted round robin (ip_vs_wrr.c).

Passes over the list with a falling weight threshold `cw`: a pass takes every dest whose weight is
at least `cw`, then `cw` drops by `di` (the gcd of the weights) until it wraps back to `mw`. With
A=4, B=3, C=2 that gives A A B A B C A B C.
"""

from __future__ import annotations

from math import gcd

from pylvs.engine.services import RealServer, VirtualService
from pylvs.sched.base import Flow, Scheduler, usable


class WeightedRoundRobin(Scheduler):
    name = "wrr"

    def __init__(self, service: VirtualService) -> None:
        self.pos = -1  # cursor: index of the last choice; -1 = the list head
        self.cw = 0  # current weight threshold
        self.mw = 0  # max weight - (di - 1), so that the last pass is at cw = 1
        self.di = 1  # gcd of the positive weights
        super().__init__(service)

    def update(self, service: VirtualService) -> None:
        weights = [d.weight for d in service.dests]
        self.di = gcd(*(w for w in weights if w > 0)) or 1
        self.mw = max(weights, default=0) - (self.di - 1)
        self.pos = -1  # the kernel restarts from the head after any change
        # The kernel's ip_vs_wrr_dest_changed; with cw == 0 this is also the initial cw = mw.
        if self.cw > self.mw or not self.cw:
            self.cw = self.mw
        elif self.di > 1:
            self.cw = (self.cw // self.di) * self.di + 1

    def schedule(self, service: VirtualService, flow: Flow) -> RealServer | None:
        if self.mw == 0:
            return None
        dests = service.dests
        last = self.pos  # update() runs after every list change, so the index stays valid
        i = last + 1
        stop = -2  # index at which to give up, once every dest was checked at cw = 1
        last_pass = restarted = False
        while True:
            while i < len(dests):
                dest = dests[i]
                if dest.weight >= self.cw and usable(dest):
                    self.pos = i
                    return dest
                if i == stop:
                    self.pos = i
                    return None
                i += 1
            i = 0
            self.cw -= self.di
            if self.cw <= 0:
                self.cw = self.mw
                # The pass at cw <= di (weights >= 1) already covered the whole list.
                if last_pass or last < 0:
                    self.pos = -1
                    return None
                restarted = True
            last_pass = self.cw <= self.di
            if last_pass and restarted and last >= 0:
                # The first weight >= 1 pass only covered the dests after `last`; finish at it.
                stop = last
