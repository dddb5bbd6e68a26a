"""Scheduler registry and the rules every scheduler shares (ipvs.md §2 common rules, §3.8)."""

from __future__ import annotations

import random

import pytest

from pylvs.engine.services import SVC_F_SCHED1, RealServer, VirtualService, pack_ip
from pylvs.sched import SCHEDULERS, Scheduler, UnknownScheduler, scheduler_class
from pylvs.sched.base import Flow

ALL = ["rr", "wrr", "lc", "wlc", "sed", "nq", "fo", "ovf", "twos", "dh", "sh", "mh", "lblc", "lblcr"]
HASHING = {"dh", "sh", "mh"}  # refuse (None) rather than pick another dest without a fallback


def service(*dests: RealServer, flags: int = 0) -> VirtualService:
    return VirtualService(6, pack_ip("192.0.2.1"), 80, flags=flags, dests=list(dests))


def flows(n: int, seed: int = 1) -> list[Flow]:
    rng = random.Random(seed)
    return [
        Flow(6, rng.randbytes(4), rng.randrange(1024, 65536), rng.randbytes(4), 80, float(i))
        for i in range(n)
    ]


def test_registry_has_every_kernel_scheduler():
    assert sorted(SCHEDULERS) == sorted(ALL)
    for name, cls in SCHEDULERS.items():
        assert issubclass(cls, Scheduler)
        assert cls.name == name
        assert scheduler_class(name) is cls


def test_unknown_scheduler_lists_the_known_names():
    with pytest.raises(UnknownScheduler) as err:
        scheduler_class("wlcx")
    text = str(err.value)
    assert "'wlcx'" in text
    for name in ALL:
        assert name in text.split("known:")[1]


@pytest.mark.parametrize("name", ALL)
def test_no_destination_gives_none(name):
    svc = service()
    sched = SCHEDULERS[name](svc)
    for flow in flows(20):
        assert sched.schedule(svc, flow) is None


@pytest.mark.parametrize("name", ALL)
def test_quiesced_dests_are_never_chosen(name):
    a = RealServer(pack_ip("10.0.0.1"), 80, weight=0)
    b = RealServer(pack_ip("10.0.0.2"), 80, weight=1)
    svc = service(a, b, flags=SVC_F_SCHED1)  # with sh/mh fallback the hashing ones must pick b
    sched = SCHEDULERS[name](svc)
    for flow in flows(300):
        got = sched.schedule(svc, flow)
        assert got is b or (name == "dh" and got is None)
    svc_all_zero = service(RealServer(pack_ip("10.0.0.3"), 80, weight=0))
    sched = SCHEDULERS[name](svc_all_zero)
    for flow in flows(50):
        assert sched.schedule(svc_all_zero, flow) is None


@pytest.mark.parametrize("name", ALL)
def test_overloaded_dests_are_never_chosen_for_new_flows(name):
    a = RealServer(pack_ip("10.0.0.1"), 80, weight=5)
    b = RealServer(pack_ip("10.0.0.2"), 80, weight=1)
    c = RealServer(pack_ip("10.0.0.3"), 80, weight=1)
    svc = service(a, b, c)
    a.overloaded = True
    sched = SCHEDULERS[name](svc)
    seen = set()
    for flow in flows(300):
        got = sched.schedule(svc, flow)
        assert got is not a
        if name not in HASHING:
            assert got is not None
        seen.add(None if got is None else got.addr)
    if name in HASHING:
        assert None in seen  # no fallback flag: flows hashed to `a` are refused
    b.overloaded = c.overloaded = True
    for flow in flows(50, seed=2):
        got = sched.schedule(svc, flow)
        assert got is None, name
