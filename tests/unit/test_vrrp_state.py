"""The VRRP state machine without sockets: elections, timers, preemption, tracking, sync groups."""

from __future__ import annotations

import pytest

from pylvs.vrrp.packet import Advert
from pylvs.vrrp.router import Router, ScriptState, Tracked
from pylvs.vrrp.state import BACKUP, FAULT, MASTER, STOP, Garp, Instance, InstanceConfig, SendAdvert, Transition

ME, PEER = "192.0.2.2", "192.0.2.3"


def instance(priority: int = 100, **kw) -> Instance:
    return Instance(InstanceConfig("VI_1", 51, priority=priority, addresses=("192.0.2.100",), primary_ip=ME, **kw))


def advert(priority: int, version: int = 2, interval: float = 1.0) -> Advert:
    return Advert(version, 51, priority, ("192.0.2.100",), interval)


def transitions(actions) -> list[str]:
    return [a.new for a in actions if isinstance(a, Transition)]


def test_master_down_interval_and_skew_as_keepalived_computes_them():
    v2 = instance(100)
    assert v2.skew() == pytest.approx(156 / 256)
    assert v2.master_down_interval() == pytest.approx(3 + 156 / 256)
    v3 = instance(200, version=3, advert_int=0.5)
    assert v3.skew() == pytest.approx(56 / 256 * 0.5)
    assert v3.master_down_interval() == pytest.approx(1.5 + 56 / 256 * 0.5)


def test_a_backup_hearing_nobody_becomes_master_after_the_down_interval():
    inst = instance(100)
    assert transitions(inst.start(0.0)) == [BACKUP]
    assert inst.deadline() == pytest.approx(3.609375)
    assert inst.expire(3.6) == []
    actions = inst.expire(3.61)
    assert actions[0] == SendAdvert(100) and transitions(actions) == [MASTER]
    assert Garp(5) in actions  # vrrp_garp_master_repeat
    assert inst.deadline() == pytest.approx(4.61)  # next advert in advert_int
    assert inst.expire(4.61) == [SendAdvert(100)]
    assert inst.garp_at == pytest.approx(3.61 + 5)  # vrrp_garp_master_delay: a second round 5 s later
    assert Garp(5) in inst.expire(3.61 + 5) and inst.garp_at is None


def test_adverts_from_a_master_keep_a_backup_down():
    inst = instance(100)
    inst.start(0.0)
    for t in (1.0, 2.0, 3.0, 4.0, 5.0):
        assert inst.receive(advert(150), PEER, t) == []
        assert inst.expire(t + 0.5) == []
    assert inst.master_ip == PEER and inst.state == BACKUP


def test_the_owner_starts_as_master_and_priority_zero_means_skew_time():
    owner = instance(255)
    assert transitions(owner.start(0.0)) == [MASTER]
    backup = instance(100)
    backup.start(0.0)
    backup.receive(advert(0), PEER, 1.0)
    assert backup.deadline() == pytest.approx(1.0 + backup.skew())


def test_preemption_nopreempt_and_preempt_delay():
    preempting = instance(150)
    preempting.start(0.0)
    preempting.receive(advert(100), PEER, 1.0)  # a lower master: ignored, so the timer runs out
    assert preempting.deadline() == pytest.approx(preempting.master_down_interval())
    polite = instance(150, preempt=False)
    polite.start(0.0)
    polite.receive(advert(100), PEER, 1.0)
    assert polite.deadline() == pytest.approx(1.0 + polite.master_down_interval())
    delayed = instance(150, preempt_delay=5.0)
    delayed.start(0.0)
    for t in range(1, 6):  # tolerated for 5 s from the first one, then ignored
        delayed.receive(advert(100), PEER, float(t))
    assert delayed.deadline() == pytest.approx(5.0 + delayed.master_down_interval())
    delayed.receive(advert(100), PEER, 6.0)
    assert delayed.deadline() == pytest.approx(5.0 + delayed.master_down_interval())


def test_a_master_yields_to_a_higher_priority_or_higher_address_and_answers_a_lower_one():
    inst = instance(100)
    inst.start(0.0)
    inst.expire(10.0)
    assert inst.state == MASTER
    assert inst.receive(advert(50), PEER, 10.5) == [SendAdvert(100)]
    assert transitions(inst.receive(advert(100), "192.0.2.1", 10.6)) == []  # same priority, lower address
    assert transitions(inst.receive(advert(100), PEER, 10.7)) == [BACKUP]  # same priority, higher address
    assert inst.state == BACKUP and inst.master_ip == PEER


def test_v3_backup_learns_the_masters_interval_and_v2_drops_a_different_one():
    v3 = instance(100, version=3, advert_int=1.0)
    v3.start(0.0)
    assert v3.accepts(advert(150, 3, 0.25)) is None
    v3.receive(advert(150, 3, 0.25), PEER, 1.0)
    assert v3.master_adver_int == 0.25
    assert v3.deadline() == pytest.approx(1.0 + 0.75 + 156 / 256 * 0.25)
    v2 = instance(100)
    assert "advertisement interval mismatch" in v2.accepts(advert(150, 2, 2.0))
    assert "wrong version" in v2.accepts(advert(150, 3, 1.0))
    assert "invalid ip number count" in v2.accepts(Advert(2, 51, 150, (), 1.0))


def test_pass_authentication_must_match():
    inst = instance(100, auth_type=1, auth_data=b"k@l!ve1")
    assert inst.accepts(Advert(2, 51, 150, ("192.0.2.100",), 1.0, 1, b"k@l!ve1\0")) is None
    assert "incorrect auth" in inst.accepts(Advert(2, 51, 150, ("192.0.2.100",), 1.0, 1, b"other\0\0\0"))
    assert "auth" in inst.accepts(Advert(2, 51, 150, ("192.0.2.100",), 1.0))


def test_shutdown_of_a_master_sends_priority_zero():
    inst = instance(255)
    inst.start(0.0)
    actions = inst.shutdown(1.0)
    assert actions[0] == SendAdvert(0) and transitions(actions) == [STOP]
    assert inst.deadline() is None


def router(**tracking) -> Router:
    insts = {name: Instance(InstanceConfig(name, vrid, priority=100, primary_ip=ME))
             for name, vrid in (("VI_1", 51), ("VI_2", 52))}
    return Router(insts, {"VI_1": [Tracked("interface", "vip0")], "VI_2": [Tracked("interface", "dip0")],
                          **tracking}, {"VG1": ["VI_1", "VI_2"]})


def test_a_sync_group_moves_together():
    r = router()
    r.start(0.0)
    r.receive("VI_1", Advert(2, 51, 150, (), 1.0), PEER, 1.0)
    out = r.expire(3.7)  # VI_2 timed out: VI_1 follows it although its own timer still runs
    assert [(n, a.new) for n, a in out if isinstance(a, Transition)] == [("VI_2", MASTER), ("VI_1", MASTER)]
    out = r.receive("VI_1", Advert(2, 51, 200, (), 1.0), PEER, 4.0)
    assert [(n, a.new) for n, a in out if isinstance(a, Transition)] == [("VI_1", BACKUP), ("VI_2", BACKUP)]


def test_tracked_interface_faults_the_group_and_recovers():
    r = router()
    r.start(0.0)
    out = r.link("dip0", False, 1.0)
    assert {(n, a.new) for n, a in out if isinstance(a, Transition)} == {("VI_2", FAULT), ("VI_1", FAULT)}
    out = r.link("dip0", True, 2.0)
    assert {(n, a.new) for n, a in out if isinstance(a, Transition)} == {("VI_2", BACKUP), ("VI_1", BACKUP)}


def test_script_weights_move_the_priority():
    insts = {"VI_1": Instance(InstanceConfig("VI_1", 51, priority=100, primary_ip=ME))}
    r = Router(insts, {"VI_1": [Tracked("script", "up", 20), Tracked("script", "down", -30),
                                Tracked("script", "must", None)]})
    r.scripts["down"] = ScriptState(rise=1, fall=2)
    r.start(0.0)
    assert insts["VI_1"].priority == 100  # nothing known yet
    r.script_result("up", True, 1.0)
    assert insts["VI_1"].priority == 120
    r.script_result("down", True, 1.0)
    r.script_result("down", False, 2.0)  # fall 2: one failure is not enough
    assert insts["VI_1"].priority == 120
    r.script_result("down", False, 3.0)
    assert insts["VI_1"].priority == 90
    out = r.script_result("must", False, 4.0)
    assert [a.new for _, a in out if isinstance(a, Transition)] == [FAULT]


def test_a_master_entering_fault_steps_down_with_priority_zero():
    r = router()
    r.start(0.0)
    r.expire(4.0)
    assert {i.state for i in r.instances.values()} == {MASTER}
    out = r.link("vip0", False, 5.0)
    assert [(n, a) for n, a in out if isinstance(a, SendAdvert)] == [("VI_1", SendAdvert(0)), ("VI_2", SendAdvert(0))]
    assert {i.state for i in r.instances.values()} == {FAULT}
