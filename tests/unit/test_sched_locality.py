"""lblc and lblcr: expected choices worked out by hand from ipvs.md §2 / §7.

The cache is keyed by the packet's destination address. A cached server is "overloaded" (lblc
sense) when its active conns exceed its weight while some server has active * 2 < weight.
Expiry runs from a 60 s timer that starts with the first decision; every 30th tick (every 30 min)
drops entries unused for the expiration time.
"""

from __future__ import annotations

import pytest

from pylvs.engine.services import RealServer, VirtualService, pack_ip
from pylvs.sched import lblc
from pylvs.sched.base import Flow, Scheduler
from pylvs.sched.lblc import MAX_SIZE, LocalityBasedLeastConnection, LocalitySettings, locality_overloaded
from pylvs.sched.lblcr import LocalityBasedLeastConnectionReplication, set_max, set_min
from tests.unit.sched_helpers import make, name_of


def pick(sched: Scheduler, svc: VirtualService, d: dict[str, RealServer], daddr: str, now: float) -> str:
    return name_of(d, sched.schedule(svc, Flow(6, pack_ip("198.51.100.7"), 40000, pack_ip(daddr), 80, now)))


X, Y, Z = "203.0.113.10", "203.0.113.20", "203.0.113.30"


def test_locality_overloaded_rule():
    svc, d = make(A=1, B=4)
    d["A"].activeconns = 2
    d["B"].activeconns = 2  # 4 < 4 is false: nobody is under half
    assert not locality_overloaded(d["A"], svc.dests)
    d["B"].activeconns = 1
    assert locality_overloaded(d["A"], svc.dests)
    d["A"].activeconns = 1  # not above its weight
    assert not locality_overloaded(d["A"], svc.dests)


# -- lblc -------------------------------------------------------------------------------------


def test_lblc_sticks_until_overloaded():
    svc, d = make(A=1, B=1)
    sched = LocalityBasedLeastConnection(svc)
    assert pick(sched, svc, d, X, 0) == "A"  # miss: wlc tie -> A
    d["A"].activeconns = 1
    assert pick(sched, svc, d, X, 1) == "A"  # hit, 1 > 1 is false (wlc alone would say B)
    assert pick(sched, svc, d, Y, 2) == "B"  # a new address: wlc
    d["A"].activeconns = 2
    d["B"].activeconns = 1  # 1 * 2 < 1 false: no lightly loaded peer -> keep A
    assert pick(sched, svc, d, X, 3) == "A"
    d["B"].activeconns = 0  # now B is under half of its weight -> reschedule with wlc
    assert pick(sched, svc, d, X, 4) == "B"
    d["A"].activeconns = 0
    d["B"].activeconns = 1
    assert pick(sched, svc, d, X, 5) == "B"  # the cache now says B


def test_lblc_quiesced_or_removed_cached_server():
    svc, d = make(A=1, B=1)
    sched = LocalityBasedLeastConnection(svc)
    assert pick(sched, svc, d, X, 0) == "A"
    d["A"].weight = 0
    assert pick(sched, svc, d, X, 1) == "B"
    d["A"].weight = 1
    d["B"].available = False  # deleted: the engine removes it and clears AVAILABLE
    svc.dests.remove(d["B"])
    sched.update(svc)
    assert pick(sched, svc, d, X, 2) == "A"


def test_lblc_cache_hit_ignores_the_threshold_overload_flag():
    # As the kernel: the hit test is AVAILABLE, weight > 0 and the lblc rule only.
    svc, d = make(A=1, B=1)
    sched = LocalityBasedLeastConnection(svc)
    assert pick(sched, svc, d, X, 0) == "A"
    d["A"].overloaded = True
    assert pick(sched, svc, d, X, 1) == "A"
    assert pick(sched, svc, d, Y, 2) == "B"  # a miss skips it


def test_lblc_expiry_runs_every_30_minutes():
    svc, d = make(A=1, B=1)
    sched = LocalityBasedLeastConnection(svc)
    assert pick(sched, svc, d, Z, 0) == "A"  # timer starts: ticks at 60, 120, ...
    assert pick(sched, svc, d, X, 10) == "A"
    d["A"].activeconns = 1  # a fresh wlc decision would now pick B
    # full checks at 1800, 3600, ..., 86400: at 86400 Z (idle 86400 s) goes, X (idle 86390 s) stays
    assert pick(sched, svc, d, X, 86405) == "A"
    assert pick(sched, svc, d, Z, 86405) == "B"


def test_lblc_expiry_boundary_and_settings():
    svc, d = make(A=1, B=1)
    sched = LocalityBasedLeastConnection(svc)
    sched.settings = LocalitySettings(lblc_expiration=600)
    assert pick(sched, svc, d, X, 0) == "A"
    d["A"].activeconns = 1
    assert pick(sched, svc, d, X, 1799) == "A"  # no full check before 1800; refreshes X
    sched2 = LocalityBasedLeastConnection(svc)
    sched2.settings = LocalitySettings(lblc_expiration=600)
    d["A"].activeconns = 0
    assert pick(sched2, svc, d, X, 0) == "A"
    d["A"].activeconns = 1
    assert pick(sched2, svc, d, X, 1800) == "B"  # full check at 1800: 0 + 600 <= 1800


def test_lblc_module_settings_are_shared(monkeypatch):
    monkeypatch.setattr(lblc.settings, "lblc_expiration", 60.0)
    svc, d = make(A=1, B=1)
    sched = LocalityBasedLeastConnection(svc)
    assert pick(sched, svc, d, X, 0) == "A"
    d["A"].activeconns = 1
    assert pick(sched, svc, d, X, 1800) == "B"


def test_lblc_long_idle_gap_keeps_the_timer_phase():
    svc, d = make(A=1, B=1)
    sched = LocalityBasedLeastConnection(svc)
    base = 100 * 86400.0  # a multiple of 1800 s after the timer started at 0
    assert pick(sched, svc, d, X, 0) == "A"
    assert pick(sched, svc, d, Y, base + 30) == "A"  # X expired at 86400: only Y is cached
    assert list(sched.cache.entries) == [pack_ip(Y)]
    # The full checks stay on the 30-minute grid: the next one is at base + 1800, where Y
    # (used at base + 30) is past a 1000 s expiration.
    sched.settings = LocalitySettings(lblc_expiration=1000)
    d["A"].activeconns = 1
    assert pick(sched, svc, d, Y, base + 1800) == "B"
    assert sched.cache.next_tick == base + 1860


def test_lblc_collects_idle_entries_when_the_table_is_too_big():
    svc, d = make(A=1, B=1)
    sched = LocalityBasedLeastConnection(svc)
    n = MAX_SIZE + 16
    for i in range(n):
        sched.schedule(svc, Flow(6, b"\x01\x02\x03\x04", 1, i.to_bytes(4, "big"), 80, 0.0))
    assert len(sched.cache.entries) == n
    # ticks at 60..300 find nothing idle for 6 min; the tick at 360 removes
    # goal = (n - MAX_SIZE) * 4 / 3 = 21 entries, oldest first
    sched.schedule(svc, Flow(6, b"\x01\x02\x03\x04", 1, (0).to_bytes(4, "big"), 80, 300.0))
    assert len(sched.cache.entries) == n
    sched.schedule(svc, Flow(6, b"\x01\x02\x03\x04", 1, (0).to_bytes(4, "big"), 80, 360.0))
    assert len(sched.cache.entries) == n - 21
    assert (0).to_bytes(4, "big") in sched.cache.entries  # refreshed at 300: not idle
    gone = [i for i in range(n) if i.to_bytes(4, "big") not in sched.cache.entries]
    assert gone == list(range(1, 22))


# -- lblcr ------------------------------------------------------------------------------------


def test_lblcr_set_min_and_max():
    svc, d = make(A=1, B=2, C=1)
    members = [d["A"], d["B"], d["C"]]
    d["A"].activeconns, d["B"].activeconns, d["C"].activeconns = 1, 1, 2
    assert set_min(members) is d["B"]  # 256/1 vs 256/2
    assert set_max(members) is d["C"]  # 512/1
    d["B"].overloaded = True  # min skips it, max does not look at overload
    assert set_min(members) is d["A"]
    d["C"].weight = 0
    assert set_max(members) is d["A"]  # C (weight 0) is out; A 256/1 is heavier than B 256/2
    d["B"].available = False
    d["A"].weight = 0
    assert set_min(members) is None


def test_lblcr_replicates_and_sheds():
    svc, d = make(A=1, B=1)
    sched = LocalityBasedLeastConnectionReplication(svc)
    assert pick(sched, svc, d, X, 0) == "A"  # {A}
    d["A"].activeconns = 1
    assert pick(sched, svc, d, X, 1) == "A"  # 1 > 1 is false
    d["A"].activeconns = 2
    assert pick(sched, svc, d, X, 10) == "B"  # A overloaded (B under half): wlc -> B; {B, A}
    d["B"].activeconns = 1
    assert pick(sched, svc, d, X, 20) == "B"  # min of {B 256, A 512}
    d["A"].activeconns = 0
    assert pick(sched, svc, d, X, 30) == "A"  # both are in the set
    # The set last changed at 10; shedding needs now > 10 + 86400 (strictly).
    d["A"].activeconns = 2
    assert pick(sched, svc, d, X, 86410) == "B"  # no shedding yet
    d["A"].activeconns = 0
    # now min = A (0); shedding removes the most loaded, B (256 vs 0); A is returned
    assert pick(sched, svc, d, X, 86410.5) == "A"
    d["A"].activeconns = 1
    assert pick(sched, svc, d, X, 86411) == "A"  # set is {A}: B (0 conns) is no longer a member
    assert sched.cache.entries[pack_ip(X)].members == [d["A"]]


def test_lblcr_unusable_members_trigger_a_new_member():
    svc, d = make(A=1, B=1, C=1)
    sched = LocalityBasedLeastConnectionReplication(svc)
    assert pick(sched, svc, d, X, 0) == "A"
    d["A"].weight = 0
    assert pick(sched, svc, d, X, 1) == "B"
    assert sched.cache.entries[pack_ip(X)].members == [d["B"], d["A"]]
    d["B"].overloaded = True
    assert pick(sched, svc, d, X, 2) == "C"
    assert sched.cache.entries[pack_ip(X)].members == [d["C"], d["B"], d["A"]]
    d["C"].overloaded = True
    assert pick(sched, svc, d, X, 3) == "-"


def test_lblcr_entries_expire_like_lblc():
    svc, d = make(A=1, B=1)
    sched = LocalityBasedLeastConnectionReplication(svc)
    sched.settings = LocalitySettings(lblcr_expiration=600)
    assert pick(sched, svc, d, X, 0) == "A"
    d["A"].activeconns = 1
    assert pick(sched, svc, d, X, 1799) == "A"
    assert pick(sched, svc, d, Y, 1800 + 600) == "B"
    assert pick(sched, svc, d, X, 1800 + 600) == "A"  # 1799 + 600 > 1800: survived the check at 1800
    assert pick(sched, svc, d, Y, 3600) == "B"


@pytest.mark.parametrize("cls", [LocalityBasedLeastConnection, LocalityBasedLeastConnectionReplication])
def test_locality_never_picks_overloaded_on_a_miss(cls):
    svc, d = make(A=1, B=1)
    d["A"].overloaded = True
    sched = cls(svc)
    assert [pick(sched, svc, d, f"203.0.113.{i}", i) for i in range(5)] == ["B"] * 5
