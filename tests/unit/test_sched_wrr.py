"""wrr: expected sequences worked out by hand from ip_vs_wrr.c as described in ipvs.md §2."""

from __future__ import annotations

from collections import Counter

from pylvs.engine.services import RealServer, VirtualService, pack_ip
from pylvs.sched.wrr import WeightedRoundRobin
from tests.unit.sched_helpers import FLOW, make


def run_named(sched: WeightedRoundRobin, svc: VirtualService, dests: dict[str, RealServer], n: int) -> str:
    """n scheduling decisions, as dest names ("-" for none)."""
    names = {id(d): name for name, d in dests.items()}
    return " ".join("-" if (d := sched.schedule(svc, FLOW)) is None else names[id(d)] for _ in range(n))


def test_reference_example_4_3_2():
    # cw=4: A | cw=3: A B | cw=2: A B C | cw=1: A B C
    svc, d = make(A=4, B=3, C=2)
    sched = WeightedRoundRobin(svc)
    assert run_named(sched, svc, d, 18) == "A A B A B C A B C A A B A B C A B C"


def test_reference_example_gcd_2_4():
    # di=2, mw=3: cw=3 takes B, cw=1 takes A B; then cw wraps to 3
    svc, d = make(A=2, B=4)
    sched = WeightedRoundRobin(svc)
    assert run_named(sched, svc, d, 12) == "B A B B A B B A B B A B"


def test_gcd_above_one_with_heavier_first():
    # A=4, B=2: di=2, mw=3. cw=3: A | cw=1: A B
    svc, d = make(A=4, B=2)
    sched = WeightedRoundRobin(svc)
    assert run_named(sched, svc, d, 9) == "A A B A A B A A B"


def test_quiesced_dest_is_skipped():
    # A=0 never reaches cw >= 1; B=2, C=1 give B | B C per round
    svc, d = make(A=0, B=2, C=1)
    sched = WeightedRoundRobin(svc)
    assert run_named(sched, svc, d, 9) == "B B C B B C B B C"


def test_overloaded_dest_is_skipped():
    # A=4 overloaded: cw=4 finds nothing and drops to 3 within the same call.
    svc, d = make(A=4, B=3, C=2)
    d["A"].overloaded = True
    sched = WeightedRoundRobin(svc)
    assert run_named(sched, svc, d, 10) == "B B C B C B B C B C"


def test_all_overloaded_or_zero_gives_none():
    svc, d = make(A=4, B=3)
    d["A"].overloaded = d["B"].overloaded = True
    sched = WeightedRoundRobin(svc)
    assert run_named(sched, svc, d, 3) == "- - -"
    d["B"].overloaded = False  # recovers without any update() call
    assert run_named(sched, svc, d, 3) == "B B B"

    svc, d = make(A=0, B=0)
    sched = WeightedRoundRobin(svc)
    assert sched.mw == 0
    assert run_named(sched, svc, d, 2) == "- -"


def test_adding_a_dest_restarts_from_the_head_and_keeps_cw():
    svc, d = make(A=4, B=3, C=2)
    sched = WeightedRoundRobin(svc)
    assert run_named(sched, svc, d, 3) == "A A B"  # now cw = 3
    dd = RealServer(pack_ip("10.0.0.9"), 80, weight=6)
    svc.dests.insert(0, dd)  # newest first
    d["D"] = dd
    sched.update(svc)  # di=1, mw=6; cw=3 stays; cursor back to the head
    assert (sched.di, sched.mw, sched.cw) == (1, 6, 3)
    # cw=3: D A B | cw=2: D A B C | cw=1: D A B C | cw=6: D
    assert run_named(sched, svc, d, 12) == "D A B D A B C D A B C D"


def test_deleting_a_dest():
    svc, d = make(A=4, B=3, C=2)
    sched = WeightedRoundRobin(svc)
    assert run_named(sched, svc, d, 3) == "A A B"  # cw = 3, cursor at B
    svc.dests.remove(d["A"])
    sched.update(svc)  # mw=3, cw=3 kept, cursor at the head
    # cw=3: B | cw=2: B C | cw=1: B C | cw=3: B
    assert run_named(sched, svc, d, 8) == "B B C B C B B C"


def test_weight_edit_rounds_cw_onto_the_gcd_grid():
    svc, d = make(A=3, B=1)
    sched = WeightedRoundRobin(svc)
    assert run_named(sched, svc, d, 2) == "A A"  # cw = 2 now
    d["A"].weight = 6
    sched.update(svc)  # di=1, mw=6: cw=2 kept
    assert sched.cw == 2
    d["B"].weight = 2
    sched.update(svc)  # di=2, mw=5: cw = (2/2)*2 + 1 = 3
    assert (sched.di, sched.mw, sched.cw) == (2, 5, 3)
    # cw=3: A | cw=1: A B | cw=5: A | cw=3: A | cw=1: A B
    assert run_named(sched, svc, d, 7) == "A A B A A A B"


def test_distribution_3_2_1():
    svc, d = make(A=3, B=2, C=1)
    sched = WeightedRoundRobin(svc)
    counts = Counter(id(sched.schedule(svc, FLOW)) for _ in range(6000))
    assert counts[id(d["A"])] == 3000
    assert counts[id(d["B"])] == 2000
    assert counts[id(d["C"])] == 1000
