"""rr and wrr's `period` (the choices ahead, as the kernel's fast path publishes them) and `advance_to`
(continuing after a choice made elsewhere) against the schedulers' own `schedule`."""

from __future__ import annotations

import random

import pytest

from pylvs.sched.rr import RoundRobin
from pylvs.sched.wrr import WeightedRoundRobin
from tests.unit.sched_helpers import FLOW, make

SCHEDULERS = {"rr": RoundRobin, "wrr": WeightedRoundRobin}


def random_state(rng: random.Random, kind: str):
    """A service of random weights (some 0, some with a common factor, some dests unavailable) whose
    scheduler made a random number of choices, across random weight changes."""
    factor = rng.choice([1, 1, 2, 3, 5])
    svc, dests = make(**{f"d{i}": factor * rng.choice([0, 1, 1, 2, 3, 4, 7]) for i in range(rng.randint(1, 7))})
    sched = SCHEDULERS[kind](svc)
    for _ in range(rng.randint(0, 3)):
        for _ in range(rng.randint(0, 12)):
            sched.schedule(svc, FLOW)
        dest = rng.choice(svc.dests)
        if rng.random() < 0.3:
            dest.available = not dest.available
        else:
            dest.weight = factor * rng.choice([0, 1, 2, 5])
            sched.update(svc)
    return svc, sched


@pytest.mark.parametrize("kind", ["rr", "wrr"])
def test_the_period_is_what_schedule_picks_next_and_repeats(kind):
    rng = random.Random(kind)
    for _ in range(400):
        svc, sched = random_state(rng, kind)
        period = sched.period(4096)
        picks = [sched.schedule(svc, FLOW) for _ in range(2 * len(period) + 1)]
        if not period:
            assert picks == [None]
            continue
        assert [step[0] for step in period * 2] == picks[:-1] and picks[-1] is period[0][0]
        usable = [d for d in svc.dests if d.weight > 0 and d.available]
        want = len(usable) if kind == "rr" else sum(d.weight for d in usable) // sched.di
        assert len(period) == want


@pytest.mark.parametrize("kind", ["rr", "wrr"])
def test_advance_to_continues_after_the_given_step(kind):
    rng = random.Random(kind + "advance")
    for _ in range(400):
        svc, sched = random_state(rng, kind)
        period = sched.period(4096)
        if not period:
            continue
        k = rng.randrange(len(period))
        sched.advance_to(*period[k])
        assert [sched.schedule(svc, FLOW) for _ in range(len(period))] == \
            [step[0] for step in period[k + 1:] + period[:k + 1]]


def test_a_period_longer_than_the_limit_is_none():
    svc, _ = make(A=4000, B=97)
    assert len(WeightedRoundRobin(svc).period(4097)) == 4097
    assert WeightedRoundRobin(svc).period(4096) is None
    svc, _ = make(**{f"d{i}": 1 for i in range(5)})
    assert RoundRobin(svc).period(4) is None and len(RoundRobin(svc).period(5)) == 5
