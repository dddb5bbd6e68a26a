"""lc, wlc, sed, nq: expected choices worked out by hand from ipvs.md §2.

overhead = active * 256 + inactive (lc, wlc); sed and nq use active + 1. A dest d beats the current
best l iff loh * w_d > doh * w_l, so ties keep the earlier (newest-added) dest.
"""

from __future__ import annotations

from pylvs.engine.services import RealServer, VirtualService, pack_ip
from pylvs.sched.base import Scheduler
from pylvs.sched.lc import LeastConnection
from pylvs.sched.nq import NeverQueue
from pylvs.sched.sed import ShortestExpectedDelay
from pylvs.sched.wlc import WeightedLeastConnection, overhead
from tests.unit.sched_helpers import make, pick


def sequence(sched: Scheduler, svc: VirtualService, dests: dict[str, RealServer], n: int) -> str:
    """n decisions; each chosen dest gets one more active connection before the next."""
    out = []
    for _ in range(n):
        name = pick(sched, svc, dests)
        out.append(name)
        if name != "-":
            dests[name].activeconns += 1
    return " ".join(out)


def test_overhead_is_the_classic_formula():
    d = RealServer(pack_ip("10.0.0.1"), 80, activeconns=3, inactconns=7)
    assert overhead(d) == 3 * 256 + 7


# -- lc ---------------------------------------------------------------------------------------


def test_lc_sequence_with_equal_start():
    svc, d = make(A=1, B=1, C=1)
    assert sequence(LeastConnection(svc), svc, d, 6) == "A B C A B C"


def test_lc_counts_inactive_connections():
    # A 2, B 1, C 0 | C 256 -> B | B 257 -> A | A 258 -> C | C 512 -> B
    svc, d = make(A=1, B=1, C=1)
    d["A"].inactconns, d["B"].inactconns = 2, 1
    assert sequence(LeastConnection(svc), svc, d, 5) == "C B A C B"


def test_lc_one_active_outweighs_255_inactive():
    svc, d = make(A=1, B=1)
    d["A"].inactconns = 300  # 300
    d["B"].activeconns = 1  # 256
    assert pick(LeastConnection(svc), svc, d) == "B"
    d["A"].inactconns = 256  # tie: the earlier dest
    assert pick(LeastConnection(svc), svc, d) == "A"


def test_lc_ignores_weight_except_zero():
    svc, d = make(A=100, B=1, C=0)
    d["A"].activeconns = 2
    d["B"].activeconns = 1
    sched = LeastConnection(svc)
    assert pick(sched, svc, d) == "B"  # C has no conns but is quiesced
    d["B"].overloaded = True
    assert pick(sched, svc, d) == "A"


# -- wlc --------------------------------------------------------------------------------------


def test_wlc_sequence_1_2_3():
    # 1: all 0 -> A | 2: A 256/1 -> B | 3: C still 0 -> C | 4: A 256/1, B 256/2, C 256/3 -> C
    # 5: C 512/3 vs B 256/2 -> B | 6: A 256/1, B 512/2, C 512/3 -> C | 7: all 256/1 -> A (ties)
    # 8: A 512/1, B 512/2, C 768/3: B vs C 512*3 > 768*2 is false -> B
    svc, d = make(A=1, B=2, C=3)
    assert sequence(WeightedLeastConnection(svc), svc, d, 8) == "A B C C B C A B"


def test_wlc_inactive_and_ties():
    svc, d = make(A=1, B=1)
    d["A"].inactconns, d["B"].inactconns = 10, 5
    sched = WeightedLeastConnection(svc)
    assert pick(sched, svc, d) == "B"
    d["B"].inactconns = 10
    assert pick(sched, svc, d) == "A"
    # weights scale the comparison: A 20/2 = B 10/1 -> A keeps the tie; A 21/2 > 10/1 -> B
    d["A"].weight, d["A"].inactconns = 2, 20
    assert pick(sched, svc, d) == "A"
    d["A"].inactconns = 21
    assert pick(sched, svc, d) == "B"


def test_wlc_first_usable_then_only_overload_matters():
    svc, d = make(A=1, B=0, C=1, D=1)
    d["A"].overloaded = True
    d["C"].activeconns = 100
    d["D"].activeconns = 101
    sched = WeightedLeastConnection(svc)
    # A overloaded, B quiesced (even with no conns) -> C is the first candidate; D is heavier
    assert pick(sched, svc, d) == "C"
    d["D"].activeconns = 99
    assert pick(sched, svc, d) == "D"
    d["D"].overloaded = True
    assert pick(sched, svc, d) == "C"


def test_wlc_quiesced_dest_after_the_first_cannot_win():
    svc, d = make(A=1, B=0)
    d["A"].activeconns = 1
    assert pick(WeightedLeastConnection(svc), svc, d) == "A"


# -- sed --------------------------------------------------------------------------------------


def test_sed_sequence_1_3():
    # (active+1)/w: 1: A 1/1, B 1/3 -> B | 2: B 2/3 -> B | 3: B 3/3 ties A 1/1 -> A
    # 4: A 2/1, B 3/3 -> B | 5: B 4/3 -> B | 6: B 5/3 -> B | 7: B 6/3 ties A 2/1 -> A
    svc, d = make(A=1, B=3)
    assert sequence(ShortestExpectedDelay(svc), svc, d, 7) == "B B A B B B A"


def test_sed_ignores_inactive():
    svc, d = make(A=1, B=1)
    d["A"].inactconns = 1000
    d["B"].activeconns = 1
    assert pick(ShortestExpectedDelay(svc), svc, d) == "A"


# -- nq ---------------------------------------------------------------------------------------


def test_nq_sequence_1_3():
    # 1: A idle -> A | 2: B idle -> B | 3: A 2/1, B 2/3 -> B | 4: B 3/3 -> B | 5: B 4/3 -> B
    # 6: B 5/3 -> B | 7: B 6/3 ties A 2/1 -> A
    svc, d = make(A=1, B=3)
    assert sequence(NeverQueue(svc), svc, d, 7) == "A B B B B B A"


def test_nq_takes_an_idle_server_whatever_its_weight():
    svc, d = make(A=10, B=1)
    d["A"].activeconns = 1
    assert pick(NeverQueue(svc), svc, d) == "B"
    assert pick(ShortestExpectedDelay(svc), svc, d) == "A"  # sed: 2/10 < 1/1


def test_nq_idle_but_unusable_is_skipped():
    svc, d = make(A=1, B=0, C=2)
    d["A"].overloaded = True
    d["C"].activeconns = 5
    d["C"].inactconns = 50  # ignored
    assert pick(NeverQueue(svc), svc, d) == "C"
