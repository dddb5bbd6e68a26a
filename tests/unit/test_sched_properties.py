"""Every scheduler against the kernel's plain loop (tests/unit/sched_reference.py), step by step.

Hypothesis drives one service through random sequences of what changes a choice: dests added at the
head and removed, weight edits (as `lvsadm -e` through the service table), connections opened,
established, idled and closed by plain attribute arithmetic (as the engine does), thresholds and
overload flags, counts too large for the indexes' exact keys, and lists reordered. After every step
the indexed scheduler and the reference are asked for the same flow and must return the same dest.
"""

from __future__ import annotations

import gc
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pylvs.engine.services import SVC_F_SCHED1, SVC_F_SCHED2, RealServer, VirtualService, pack_ip
from pylvs.sched import SCHEDULERS
from pylvs.sched.base import Flow
from pylvs.sched.mh import HASH1, HASH2, hash1, hash2
from tests.unit import sched_reference as ref

REFERENCES = {
    "rr": ref.RoundRobin,
    "wrr": ref.WeightedRoundRobin,
    "lc": lambda svc: ref.Loop(ref.lc),
    "wlc": lambda svc: ref.Loop(ref.wlc),
    "sed": lambda svc: ref.Loop(ref.sed),
    "nq": lambda svc: ref.Loop(ref.nq),
    "fo": lambda svc: ref.Loop(ref.fo),
    "ovf": lambda svc: ref.Loop(ref.ovf),
    "twos": ref.PowerOfTwoChoices,
    "dh": None,  # no index: compared with a scheduler built from scratch at every step
    "sh": None,
    "mh": ref.Maglev,
    "lblc": ref.LocalityByLoop,
    "lblcr": ref.ReplicationByLoop,
}

HUGE = 1 << 31  # active connections beyond the exact range of the float keys
SADDRS = [pack_ip(f"198.51.100.{i}") for i in range(1, 9)]
DADDRS = [pack_ip(f"203.0.113.{i}") for i in range(1, 5)]

dest_index = st.integers(0, 99)
OPS = st.lists(
    st.one_of(
        st.tuples(st.just("add"), st.integers(0, 5), st.sampled_from([0, 0, 2, 3])),
        st.tuples(st.just("remove"), dest_index),
        st.tuples(st.just("weight"), dest_index, st.integers(0, 5)),
        st.tuples(st.just("open"), dest_index),
        st.tuples(st.just("establish"), dest_index),
        st.tuples(st.just("idle"), dest_index),
        st.tuples(st.just("close"), dest_index),
        st.tuples(st.just("overload"), dest_index),
        st.tuples(st.just("huge"), dest_index),
        st.tuples(st.just("reorder"), dest_index),
        st.tuples(st.just("wait"), st.integers(0, 3000)),
    ),
    max_size=50,
)


class Fresh:
    """The same scheduler built from scratch for every decision."""

    def __init__(self, name: str) -> None:
        self.cls = SCHEDULERS[name]

    def update(self, svc: VirtualService) -> None:
        pass

    def schedule(self, svc: VirtualService, flow: Flow) -> RealServer | None:
        return self.cls(svc).schedule(svc, flow)


def open_conn(d: RealServer) -> None:
    d.inactconns += 1  # as the engine: every connection starts inactive
    d.conn_bound()


def apply(op: tuple, svc: VirtualService, serial: list[int]) -> bool:
    """One change to the service; returns True when the table would call update()."""
    kind = op[0]
    dests = svc.dests
    if kind == "add":
        serial[0] += 1
        n = serial[0]
        dests.insert(0, RealServer(bytes([10, 9, n >> 8, n & 255]), 80, weight=op[1], u_threshold=op[2]))
        return True
    if kind == "wait" or not dests:
        return False
    d = dests[op[1] % len(dests)]
    if kind == "remove":
        dests.remove(d)
        d.available = False
        return True
    if kind == "weight":  # ServiceTable.edit_dest
        d.weight = op[2]
        if op[2]:
            d.last_weight = op[2]
        d.update_overload()
        return True
    if kind == "reorder":  # not something the kernel does, but update() must cope with any list
        dests.remove(d)
        dests.append(d)
        return True
    if kind == "open":
        open_conn(d)
    elif kind == "establish" and d.inactconns > 0:
        d.inactconns -= 1
        d.activeconns += 1
    elif kind == "idle" and d.activeconns > 0:
        d.activeconns -= 1
        d.inactconns += 1
    elif kind == "close" and d.activeconns + d.inactconns > 0:
        if d.activeconns:
            d.activeconns -= 1
        else:
            d.inactconns -= 1
        d.conn_unbound()
    elif kind == "overload":
        d.overloaded = not d.overloaded
    elif kind == "huge":
        d.activeconns = 0 if d.activeconns >= HUGE else HUGE + d.activeconns
    return False


def run(name: str, weights: list[int], ops: list[tuple], flags: int, seed: int) -> None:
    serial = [len(weights)]
    svc = VirtualService(6, pack_ip("192.0.2.1"), 80, flags=flags,
                         dests=[RealServer(bytes([10, 9, 0, i + 1]), 80, weight=w) for i, w in enumerate(weights)])
    fast = SCHEDULERS[name](svc)
    slow = REFERENCES[name](svc) if REFERENCES[name] else Fresh(name)
    if name == "twos":
        fast.rng, slow.rng = random.Random(seed), random.Random(seed)
    now = 0.0
    for step, op in enumerate(ops):
        if apply(op, svc, serial):
            fast.update(svc)
            slow.update(svc)
        if op[0] == "wait":
            now += op[1]
        flow = Flow(6, SADDRS[step % 8], 1024 + step % 3, DADDRS[step % 4], 80, now)
        got, want = fast.schedule(svc, flow), slow.schedule(svc, flow)
        assert got is want, (step, op, svc.dests.index(got) if got else None, svc.dests.index(want) if want else None)
        if got is not None:
            open_conn(got)


EXAMPLES = {"mh": 25, "dh": 50, "sh": 50}


@pytest.mark.parametrize("name", list(REFERENCES))
def test_indexed_choice_is_the_kernel_loops_choice(name):
    @settings(max_examples=EXAMPLES.get(name, 100), deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(weights=st.lists(st.integers(0, 5), max_size=8), ops=OPS,
           flags=st.sampled_from([0, SVC_F_SCHED1, SVC_F_SCHED2, SVC_F_SCHED1 | SVC_F_SCHED2]),
           seed=st.integers(0, 2**32))
    def check(weights, ops, flags, seed):
        run(name, weights, ops, flags, seed)

    check()


@given(st.integers(0, 2**32 - 1))
def test_library_siphash_is_the_reference_hsiphash(value):
    assert hash1(value) == ref.hsiphash(HASH1, value)
    assert hash2(value) == ref.hsiphash(HASH2, value)


@pytest.mark.parametrize("name", [n for n, r in REFERENCES.items() if r is not None])
def test_a_replaced_scheduler_stops_listening(name):
    d = RealServer(pack_ip("10.0.0.1"), 80)
    svc = VirtualService(6, pack_ip("192.0.2.1"), 80, dests=[d])
    sched = SCHEDULERS[name](svc)
    before = len(d.sched_watchers)
    del sched
    gc.collect()
    assert len(d.sched_watchers) <= before
    assert d.sched_watchers == () or name in ("dh", "sh", "mh")


def random_ops(rng: random.Random, n: int) -> list[tuple]:
    """Long runs that hypothesis' short examples rarely reach: many dests, most of them overloaded at times."""
    kinds = ["add", "remove", "weight", "open", "establish", "idle", "close", "overload", "overload", "huge", "wait"]
    ops = []
    for _ in range(n):
        kind = rng.choice(kinds)
        if kind == "add":
            ops.append((kind, rng.randrange(6), rng.choice([0, 0, 2, 3])))
        elif kind == "weight":
            ops.append((kind, rng.randrange(100), rng.randrange(6)))
        elif kind == "wait":
            ops.append((kind, rng.randrange(3000)))
        else:
            ops.append((kind, rng.randrange(100)))
    return ops


@pytest.mark.parametrize("name", [n for n in REFERENCES if n not in EXAMPLES])
def test_long_random_runs(name):
    for seed in range(8):
        rng = random.Random(seed)
        weights = [rng.randrange(6) for _ in range(rng.randrange(12))]
        run(name, weights, random_ops(rng, 400), rng.choice([0, SVC_F_SCHED1]), seed)
