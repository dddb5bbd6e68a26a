"""Power of two choices (ip_vs_twos.c): draw two servers at random in proportion to their weights,
take the one with the lower overhead / weight (the first draw on a tie)."""

from __future__ import annotations

import random

from pylvs.engine.services import RealServer, VirtualService
from pylvs.sched.base import Flow, Scheduler, usable
from pylvs.sched.wlc import overhead


class PowerOfTwoChoices(Scheduler):
    name = "twos"

    def __init__(self, service: VirtualService) -> None:
        self.rng = random.Random()  # replace or seed it for reproducible runs
        super().__init__(service)

    def schedule(self, service: VirtualService, flow: Flow) -> RealServer | None:
        dests = [d for d in service.dests if usable(d)]
        if not dests:
            return None
        # The kernel draws from [0, sum of weights]: the + 1 makes the upper bound inclusive.
        total = sum(d.weight for d in dests) + 1
        r1 = self.rng.randrange(total)
        r2 = self.rng.randrange(total)
        choice1 = choice2 = None
        for dest in dests:
            r1 -= dest.weight
            r2 -= dest.weight
            if choice1 is None and r1 <= 0:
                choice1 = dest
            if choice2 is None and r2 <= 0:
                choice2 = dest
            if choice1 is not None and choice2 is not None:
                break
        # r <= total - 1 = the sum of the weights, so both draws land on a dest.
        assert choice1 is not None and choice2 is not None
        if choice2.weight * overhead(choice1) > choice1.weight * overhead(choice2):
            return choice2
        return choice1
