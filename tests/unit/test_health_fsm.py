"""The checker state machine: retry+1 failures to go down, one success to come back."""

from __future__ import annotations

from pylvs.health.fsm import CheckerFSM


def run(fsm: CheckerFSM, results: str) -> list[tuple[str | None, float]]:
    out = []
    for r in results:
        o = fsm.record(r == "+")
        out.append((o.transition, o.delay))
    return out


def test_first_failure_at_start_is_down_at_once():
    fsm = CheckerFSM(retry=3, delay_loop=6, delay_before_retry=2, alpha=False)
    assert fsm.up and fsm.retry_it == 3
    assert run(fsm, "-") == [("down", 6)]


def test_a_success_first_arms_the_retries():
    fsm = CheckerFSM(retry=2, delay_loop=6, delay_before_retry=1, alpha=False)
    assert run(fsm, "+--") == [(None, 6), (None, 1), (None, 1)]
    assert fsm.up
    assert run(fsm, "-") == [("down", 6)]  # the third consecutive failure: retry + 1
    assert not fsm.up


def test_a_success_in_between_resets_the_count():
    fsm = CheckerFSM(retry=1, delay_loop=5, delay_before_retry=1, alpha=False)
    assert run(fsm, "+-+-+") == [(None, 5), (None, 1), (None, 5), (None, 1), (None, 5)]
    assert fsm.up


def test_down_checks_every_down_interval_and_one_success_brings_it_up():
    fsm = CheckerFSM(retry=1, delay_loop=5, delay_before_retry=1, alpha=False, down_interval=7)
    assert run(fsm, "-") == [("down", 7)]
    assert run(fsm, "---") == [(None, 7)] * 3
    assert run(fsm, "+") == [("up", 5)]


def test_alpha_starts_down():
    fsm = CheckerFSM(retry=3, delay_loop=2, delay_before_retry=1, alpha=True)
    assert not fsm.up and not fsm.has_run
    assert run(fsm, "-+") == [(None, 2), ("up", 2)]
    assert fsm.has_run


def test_retry_zero():
    fsm = CheckerFSM(retry=0, delay_loop=2, delay_before_retry=1, alpha=False)
    assert run(fsm, "+-+") == [(None, 2), ("down", 2), ("up", 2)]
