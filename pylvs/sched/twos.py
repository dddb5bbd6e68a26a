"""Power of two choices (ip_vs_twos.c): draw two servers at random in proportion to their weights,
take the one with the lower overhead / weight (the first draw on a tie).

The draw walks the usable dests in list order subtracting weights; here the running sums are kept
(rebuilt only when the usable set or a weight changes) and each draw is one bisect.
"""

from __future__ import annotations

import random
from bisect import bisect_left
from itertools import accumulate
from operator import itemgetter

from pylvs.engine.services import RealServer, VirtualService
from pylvs.sched.base import Flow
from pylvs.sched.rr import usable_in_order
from pylvs.sched.tracking import USABILITY, SortedIndex, TrackedScheduler
from pylvs.sched.wlc import overhead


class PowerOfTwoChoices(TrackedScheduler):
    name = "twos"
    watched = USABILITY  # the draw needs weights only; the two drawn dests' counts are read directly

    def __init__(self, service: VirtualService) -> None:
        self.rng = random.Random()  # replace or seed it for reproducible runs
        self.index = SortedIndex(usable_in_order)  # usable dests in list order
        self.sums: list[int] = []  # running weight sums of the usable dests, in list order
        self.sums_version = -1
        super().__init__(service)

    def schedule(self, service: VirtualService, flow: Flow) -> RealServer | None:
        if self.changed:
            self.refresh()
        usable = self.index
        keys = usable.keys
        if not keys:
            return None
        if self.sums_version != usable.version:
            self.sums = list(accumulate(map(itemgetter(1), keys)))
            self.sums_version = usable.version
        sums = self.sums
        # The kernel draws from [0, sum of weights]: the + 1 makes the upper bound inclusive.
        total = sums[-1] + 1
        bits, k = self.rng.getrandbits, total.bit_length()
        # randrange(total) as Random does it (uniform, by rejection), without its argument checks
        r1 = bits(k)
        while r1 >= total:
            r1 = bits(k)
        r2 = bits(k)
        while r2 >= total:
            r2 = bits(k)
        # The kernel's walk stops at the first dest whose running sum reaches the draw.
        at = self.tracker.at
        choice1 = at[keys[bisect_left(sums, r1)][0]]
        choice2 = at[keys[bisect_left(sums, r2)][0]]
        if choice2.weight * overhead(choice1) > choice1.weight * overhead(choice2):
            return choice2
        return choice1
