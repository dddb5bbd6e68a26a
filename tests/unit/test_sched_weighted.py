"""fo, ovf, twos: expected choices worked out by hand from ipvs.md §2."""

from __future__ import annotations

import random
from collections import Counter

from pylvs.sched.fo import WeightedFailover
from pylvs.sched.ovf import WeightedOverflow
from pylvs.sched.twos import PowerOfTwoChoices
from tests.unit.sched_helpers import make, pick

# -- fo ---------------------------------------------------------------------------------------


def test_fo_highest_weight_first_on_ties_and_load_ignored():
    svc, d = make(A=1, B=3, C=3)
    sched = WeightedFailover(svc)
    assert pick(sched, svc, d) == "B"
    d["B"].activeconns = 1000
    assert pick(sched, svc, d) == "B"
    d["B"].overloaded = True
    assert pick(sched, svc, d) == "C"
    d["C"].weight = 0
    assert pick(sched, svc, d) == "A"
    d["A"].overloaded = True
    assert pick(sched, svc, d) == "-"


# -- ovf --------------------------------------------------------------------------------------


def test_ovf_fills_the_heaviest_until_active_exceeds_weight():
    # B takes active 0..3 (<= 3), then C the same, then A 0..2; then every dest is over its weight
    svc, d = make(A=2, B=3, C=3)
    sched = WeightedOverflow(svc)
    out = []
    for _ in range(12):
        name = pick(sched, svc, d)
        out.append(name)
        if name != "-":
            d[name].activeconns += 1
    assert " ".join(out) == "B B B B C C C C A A A -"


def test_ovf_counts_only_active_and_skips_unusable():
    svc, d = make(A=1, B=5, C=2)
    d["B"].inactconns = 10_000
    sched = WeightedOverflow(svc)
    assert pick(sched, svc, d) == "B"
    d["B"].overloaded = True
    assert pick(sched, svc, d) == "C"
    d["C"].weight = 0
    assert pick(sched, svc, d) == "A"


# -- twos -------------------------------------------------------------------------------------


class Draws(random.Random):
    """Hands out fixed draws and records how many random bits each was asked for."""

    def __init__(self, *values: int) -> None:
        super().__init__(0)
        self.values = list(values)
        self.bounds: list[int] = []

    def getrandbits(self, k):  # the only call twos makes (randrange's rejection draws)
        self.bounds.append(k)
        return self.values.pop(0)


def twos_pick(svc, d, *draws: int) -> tuple[str, list[int]]:
    sched = PowerOfTwoChoices(svc)
    sched.rng = Draws(*draws)
    return pick(sched, svc, d), sched.rng.bounds


def test_twos_draws_map_onto_cumulative_weights():
    # weights A1 B2 C3: total = 7, r in 0..6 (3 random bits, 7 drawn again); r <= 1 -> A, 2..3 -> B,
    # 4..6 -> C (all conns 0: choice 1)
    svc, d = make(A=1, B=2, C=3)
    assert twos_pick(svc, d, 0, 0) == ("A", [3, 3])
    assert twos_pick(svc, d, 7, 7, 2, 0) == ("B", [3, 3, 3, 3])  # 7 is out of range: drawn again
    assert twos_pick(svc, d, 1, 0)[0] == "A"
    assert twos_pick(svc, d, 2, 0)[0] == "B"
    assert twos_pick(svc, d, 3, 0)[0] == "B"
    assert twos_pick(svc, d, 4, 0)[0] == "C"
    assert twos_pick(svc, d, 6, 0)[0] == "C"


def test_twos_takes_the_second_only_when_strictly_lighter():
    svc, d = make(A=1, B=2, C=3)
    d["A"].activeconns = d["C"].activeconns = 1
    # A (256/1) vs C (256/3): 3*256 > 1*256 -> C
    assert twos_pick(svc, d, 0, 5)[0] == "C"
    d["A"].activeconns = 0
    assert twos_pick(svc, d, 0, 5)[0] == "A"
    # C 256/3 vs B 0/2: 2*256 > 3*0 -> B
    assert twos_pick(svc, d, 4, 2)[0] == "B"
    # B 512/2 vs C 768/3: 3*512 > 2*768 is false -> the first draw, B
    d["B"].activeconns, d["C"].activeconns = 2, 3
    assert twos_pick(svc, d, 2, 4)[0] == "B"


def test_twos_skips_quiesced_and_overloaded_in_the_draw():
    svc, d = make(A=1, B=0, C=3, D=2)
    d["C"].overloaded = True
    # usable: A1 D2 -> total 4 (3 random bits); r=1 -> A, r=3 -> D
    assert twos_pick(svc, d, 1, 1) == ("A", [3, 3])
    assert twos_pick(svc, d, 3, 3)[0] == "D"


def test_twos_with_feedback_follows_the_weights():
    svc, d = make(A=1, B=2, C=3)
    sched = PowerOfTwoChoices(svc)
    sched.rng.seed(42)
    counts: Counter[str] = Counter()
    for _ in range(6000):
        name = pick(sched, svc, d)
        counts[name] += 1
        d[name].activeconns += 1
    for name, weight in (("A", 1), ("B", 2), ("C", 3)):
        assert abs(counts[name] / 6000 - weight / 6) < 0.03, counts
