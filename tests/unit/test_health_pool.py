"""The health runtime's state model (keepalived's ipwrapper), driven result by result."""

from __future__ import annotations

from pylvs.health.pool import Effects, Result, Runtime
from pylvs.keepalived import loads

SVC = {"protocol": "tcp", "addr": "10.0.0.1", "port": 80}


def conf(text: str):
    return loads(text, echo=False)


def vs(body: str, extra: str = "") -> str:
    return f"{extra}virtual_server 10.0.0.1 80 {{\n lb_algo rr\n lb_kind NAT\n protocol TCP\n{body}\n}}\n"


def rs(addr: str, body: str = "TCP_CHECK {\n}") -> str:
    return f"real_server {addr} 80 {{\n{body}\n}}\n"


def start(text: str) -> tuple[Runtime, Effects]:
    rt = Runtime(conf(text))
    return rt, rt.start()


def feed(rt: Runtime, addr: str, ok: bool, index: int = 0, weight: int | None = None, detail: str = "") -> Effects:
    (vstate,) = rt.vss.values()
    chk = vstate.rss[(addr, 80)].checkers[index]
    eff, _delay = rt.on_result(chk, Result(ok, detail, weight))
    return eff


def ops(eff: Effects) -> list[tuple]:
    return [(r["op"], r["dest"]["addr"], r["dest"].get("weight")) for r in eff.requests if "dest" in r]


def test_failure_removes_and_success_adds_back():
    rt, eff = start(vs(rs("10.0.1.1", "weight 3\nTCP_CHECK {\n}") + rs("10.0.1.2")))
    assert "Activating healthchecker for service [10.0.1.1]:tcp:80 for VS [10.0.0.1]:tcp:80" in eff.messages
    down = feed(rt, "10.0.1.1", False, detail="TCP connection to [10.0.1.1]:tcp:80 failed.")
    assert ops(down) == [("del-dest", "10.0.1.1", None)]
    assert down.messages == ["TCP connection to [10.0.1.1]:tcp:80 failed.",
                             "TCP_CHECK on service [10.0.1.1]:tcp:80 failed after 1 retries.",
                             "Removing service [10.0.1.1]:tcp:80 from VS [10.0.0.1]:tcp:80"]
    assert down.fifo == ["RS [10.0.1.1]:tcp:80 [10.0.0.1]:tcp:80 DOWN"]
    assert ops(feed(rt, "10.0.1.1", False)) == []
    up = feed(rt, "10.0.1.1", True)
    assert ops(up) == [("add-dest", "10.0.1.1", 3)]
    assert up.messages == ["TCP connection to [10.0.1.1]:tcp:80 success.",
                           "Adding service [10.0.1.1]:tcp:80 to VS [10.0.0.1]:tcp:80"]


def test_retry_plus_one_consecutive_failures():
    rt, _ = start(vs(rs("10.0.1.1", "TCP_CHECK {\nretry 2\n}")))
    assert ops(feed(rt, "10.0.1.1", True)) == []
    assert ops(feed(rt, "10.0.1.1", False)) == []
    assert ops(feed(rt, "10.0.1.1", False)) == []
    eff = feed(rt, "10.0.1.1", False)
    assert ops(eff) == [("del-dest", "10.0.1.1", None)]
    assert "TCP_CHECK on service [10.0.1.1]:tcp:80 failed after 2 retries." in eff.messages


def test_next_check_delays():
    rt, _ = start(vs(rs("10.0.1.1", "TCP_CHECK {\nretry 1\ndelay_loop 6\ndelay_before_retry 2\n}")))
    chk = rt.vss[("addr", "10.0.0.1", 80, "TCP")].rss[("10.0.1.1", 80)].checkers[0]
    delays = [rt.on_result(chk, Result(ok))[1] for ok in (True, False, False, False, True)]
    assert delays == [6, 2, 6, 6, 6]


def test_inhibit_on_failure_sets_weight_zero_instead_of_removing():
    rt, eff = start(vs(rs("10.0.1.1", "weight 4\ninhibit_on_failure\nTCP_CHECK {\n}")))
    down = feed(rt, "10.0.1.1", False)
    assert ops(down) == [("edit-dest", "10.0.1.1", 0)]
    assert "Disabling service [10.0.1.1]:tcp:80 of VS [10.0.0.1]:tcp:80" in down.messages
    up = feed(rt, "10.0.1.1", True)
    assert ops(up) == [("edit-dest", "10.0.1.1", 4)]
    assert "Enabling service [10.0.1.1]:tcp:80 of VS [10.0.0.1]:tcp:80" in up.messages


def test_real_server_is_up_only_when_all_its_checkers_are():
    rt, _ = start(vs(rs("10.0.1.1", "TCP_CHECK {\n}\nTCP_CHECK {\nconnect_port 81\n}")))
    assert ops(feed(rt, "10.0.1.1", False, 0)) == [("del-dest", "10.0.1.1", None)]
    assert ops(feed(rt, "10.0.1.1", False, 1)) == []
    assert ops(feed(rt, "10.0.1.1", True, 0)) == []
    assert ops(feed(rt, "10.0.1.1", True, 1)) == [("add-dest", "10.0.1.1", 1)]


def test_alpha_starts_down_and_enters_on_first_success():
    rt, eff = start(vs(rs("10.0.1.1", "alpha\nTCP_CHECK {\n}")))
    assert [r["op"] for r in eff.requests] == ["add-service"]
    assert "Starting with quorum down 1-0=1 > 0 for VS [10.0.0.1]:tcp:80" in eff.messages
    assert ops(feed(rt, "10.0.1.1", False)) == []
    up = feed(rt, "10.0.1.1", True)
    assert ops(up) == [("add-dest", "10.0.1.1", 1)]
    assert "Gained quorum 1+0=1 <= 1 for VS [10.0.0.1]:tcp:80" in up.messages


QUORUM = vs("alpha\nquorum 7\nhysteresis 2\nsorry_server 10.0.9.9 80\nquorum_up /bin/qup\nquorum_down /bin/qdown\n"
            + "".join(rs(f"10.0.1.{i}") for i in range(1, 11)))


def test_quorum_with_hysteresis_and_sorry_server():
    rt, eff = start(QUORUM)
    assert ops(eff) == [("add-dest", "10.0.9.9", 1)] and eff.requests[0]["op"] == "add-service"
    assert "Adding sorry server [10.0.9.9]:tcp:80 to VS [10.0.0.1]:tcp:80" in eff.messages
    assert [s.command for s, _ in eff.scripts] == [["/bin/qdown"]]
    for i in range(1, 9):  # 8 live servers: not yet 7+2
        step = feed(rt, f"10.0.1.{i}", True)
        assert step.requests == [] and f"Adding service [10.0.1.{i}]:tcp:80 to VS [10.0.0.1]:tcp:80" in step.messages
    gained = feed(rt, "10.0.1.9", True)
    assert gained.messages[-3:] == ["Gained quorum 7+2=9 <= 9 for VS [10.0.0.1]:tcp:80",
                                    "Removing sorry server [10.0.9.9]:tcp:80 from VS [10.0.0.1]:tcp:80",
                                    "Adding alive servers to the pool for VS [10.0.0.1]:tcp:80"]
    assert ops(gained) == [("del-dest", "10.0.9.9", None)] + [("add-dest", f"10.0.1.{i}", 1) for i in range(1, 10)]
    assert [s.command for s, _ in gained.scripts] == [["/bin/qup"]]
    assert gained.fifo[-1] == "VS [10.0.0.1]:tcp:80 UP"
    for i in range(1, 5):  # down to 5 live: 5 >= 7-2, still up (each needs retry + 1 = 2 failures)
        assert ops(feed(rt, f"10.0.1.{i}", False)) == []
        assert ops(feed(rt, f"10.0.1.{i}", False)) == [("del-dest", f"10.0.1.{i}", None)]
    feed(rt, "10.0.1.5", False)
    lost = feed(rt, "10.0.1.5", False)
    assert lost.messages[-3:] == ["Lost quorum 7-2=5 > 4 for VS [10.0.0.1]:tcp:80",
                                  "Removing alive servers from the pool for VS [10.0.0.1]:tcp:80",
                                  "Adding sorry server [10.0.9.9]:tcp:80 to VS [10.0.0.1]:tcp:80"]
    assert ops(lost) == [("del-dest", f"10.0.1.{i}", None) for i in range(5, 10)] + [("add-dest", "10.0.9.9", 1)]
    assert [s.command for s, _ in lost.scripts] == [["/bin/qdown"]]
    # while the sorry server serves, real server changes only change state
    assert feed(rt, "10.0.1.1", True).requests == []
    snap = rt.snapshot()["virtual_servers"][0]
    assert (snap["quorum_up"], snap["sorry_active"], snap["weight_sum"]) == (False, True, 5)


def test_losing_quorum_without_sorry_server_changes_nothing_in_lvsd():
    rt, _ = start(vs("quorum 2\nquorum_down /bin/qdown\n" + rs("10.0.1.1") + rs("10.0.1.2")))
    eff = feed(rt, "10.0.1.1", False)
    assert ops(eff) == [("del-dest", "10.0.1.1", None)]
    assert "Lost quorum 2-0=2 > 1 for VS [10.0.0.1]:tcp:80" in eff.messages
    assert [s.command for s, _ in eff.scripts] == [["/bin/qdown"]]


def test_sorry_server_inhibit_toggles_its_weight():
    rt, eff = start(vs("sorry_server 10.0.9.9 80\nsorry_server_inhibit\n" + rs("10.0.1.1")))
    assert sorted(ops(eff)) == [("add-dest", "10.0.1.1", 1), ("add-dest", "10.0.9.9", 0)]
    lost = feed(rt, "10.0.1.1", False)
    assert ops(lost) == [("del-dest", "10.0.1.1", None), ("edit-dest", "10.0.9.9", 1)]
    assert "Enabling sorry server [10.0.9.9]:tcp:80 to VS [10.0.0.1]:tcp:80" in lost.messages
    gained = feed(rt, "10.0.1.1", True)
    assert ops(gained) == [("edit-dest", "10.0.9.9", 0), ("add-dest", "10.0.1.1", 1)]
    assert "Disabling sorry server [10.0.9.9]:tcp:80 from VS [10.0.0.1]:tcp:80" in gained.messages


def test_sorry_server_that_is_also_a_real_server():
    rt, _ = start(vs("sorry_server 10.0.1.1 80\n" + rs("10.0.1.1", "weight 5\nTCP_CHECK {\n}")))
    assert ops(feed(rt, "10.0.1.1", False)) == [("edit-dest", "10.0.1.1", 1)]
    assert ops(feed(rt, "10.0.1.1", True)) == [("edit-dest", "10.0.1.1", 5)]


def test_inhibited_servers_go_to_weight_zero_when_the_sorry_server_takes_over():
    rt, _ = start(vs("quorum 2\nsorry_server 10.0.9.9 80\n" + rs("10.0.1.1", "inhibit_on_failure\nTCP_CHECK {\n}")
                     + rs("10.0.1.2", "inhibit_on_failure\nTCP_CHECK {\n}")))
    assert ops(feed(rt, "10.0.1.1", False)) == [("edit-dest", "10.0.1.1", 0), ("edit-dest", "10.0.1.2", 0),
                                                ("add-dest", "10.0.9.9", 1)]


def test_misc_dynamic_weights():
    rt, _ = start(vs(rs("10.0.1.1", "weight 1\nMISC_CHECK {\nmisc_path /bin/true\nmisc_dynamic\n}")))
    eff = feed(rt, "10.0.1.1", True, weight=8 - 1)  # exit 10: weight 8 = configured 1 + delta 7
    assert ops(eff) == [("edit-dest", "10.0.1.1", 8)]
    assert eff.messages == ["Changing weight from 1 to 8 for active service [10.0.1.1]:tcp:80 of VS [10.0.0.1]:tcp:80"]
    down = feed(rt, "10.0.1.1", False, detail="exited with status 1")
    assert ops(down) == [("del-dest", "10.0.1.1", None)]
    assert ("Misc check for [[10.0.1.1]:tcp:80 VS [10.0.0.1]:tcp:80] by [/bin/true] failed after 0 retries "
            "(exited with status 1).") in down.messages
    up = feed(rt, "10.0.1.1", True, weight=0)  # exit 0: back to the configured weight
    assert ops(up) == [("add-dest", "10.0.1.1", 1)]
    assert "Changing weight from 8 to 1 for inactive service [10.0.1.1]:tcp:80 of VS [10.0.0.1]:tcp:80" in up.messages


def test_weights_clamp_at_zero():
    rt, _ = start(vs(rs("10.0.1.1", "weight 3\nMISC_CHECK {\nmisc_path /bin/true\nmisc_dynamic\n}")))
    assert ops(feed(rt, "10.0.1.1", True, weight=-10)) == [("edit-dest", "10.0.1.1", 0)]


def test_notify_scripts_and_fifo_lines():
    rt, _ = start(vs(rs("10.0.1.1", 'notify_up "/bin/up.sh x"\nnotify_down /bin/down.sh nobody\nTCP_CHECK {\n}')))
    down = feed(rt, "10.0.1.1", False)
    assert [(s.command, s.user) for s, _ in down.scripts] == [(["/bin/down.sh"], "nobody")]
    up = feed(rt, "10.0.1.1", True)
    assert [s.command for s, _ in up.scripts] == [["/bin/up.sh", "x"]]
    assert up.fifo == ["RS [10.0.1.1]:tcp:80 [10.0.0.1]:tcp:80 UP", "VS [10.0.0.1]:tcp:80 UP"]


def test_rs_init_notifies():
    _, eff = start(vs(rs("10.0.1.1", "notify_up /bin/up\nTCP_CHECK {\n}") + rs("10.0.1.2", "alpha\nnotify_down "
                                                                                "/bin/down\nTCP_CHECK {\n}"),
                      extra="global_defs {\n rs_init_notifies\n}\n"))
    assert [s.command for s, _ in eff.scripts] == [["/bin/up"], ["/bin/down"]]


def test_omega_shutdown_runs_notifies_and_releases_services():
    rt, _ = start(vs("omega\nquorum_down /bin/qdown\n" + rs("10.0.1.1", "notify_down /bin/down\nTCP_CHECK {\n}")))
    eff = rt.shutdown()
    assert eff.messages == ["Shutting down service [10.0.1.1]:tcp:80 from VS [10.0.0.1]:tcp:80"]
    assert [s.command for s, _ in eff.scripts] == [["/bin/down"], ["/bin/qdown"]]
    assert eff.requests == [{"op": "del-service", "svc": SVC}]
    rt2, _ = start(vs(rs("10.0.1.1", "notify_down /bin/down\nTCP_CHECK {\n}")))
    eff = rt2.shutdown(release=False)
    assert eff.scripts == [] and eff.requests == []


def test_reload_keeps_state_of_unchanged_servers():
    old_text = vs(rs("10.0.1.1") + rs("10.0.1.2"))
    old, _ = start(old_text)
    feed(old, "10.0.1.1", False)  # down: not in lvsd any more
    new = Runtime(conf(old_text.replace("lb_algo rr", "lb_algo wrr")), previous=old)
    eff = new.reload_effects(old)
    assert [r["op"] for r in eff.requests] == ["edit-service"]  # the failed server is not re-added
    assert not new.vss[("addr", "10.0.0.1", 80, "TCP")].rss[("10.0.1.1", 80)].alive
    eff = feed(new, "10.0.1.1", True)
    assert ops(eff) == [("add-dest", "10.0.1.1", 1)]


def test_reload_with_a_changed_checker_starts_it_fresh():
    old_text = vs(rs("10.0.1.1", "alpha\nTCP_CHECK {\n}"))
    old, _ = start(old_text)
    feed(old, "10.0.1.1", True)
    # a new alpha checker on a live server does not take it down (keepalived PR #1182)
    new = Runtime(conf(old_text.replace("TCP_CHECK {\n}", "TCP_CHECK {\n}\nTCP_CHECK {\nconnect_port 81\n}")),
                  previous=old)
    assert new.reload_effects(old).requests == []
    rstate = new.vss[("addr", "10.0.0.1", 80, "TCP")].rss[("10.0.1.1", 80)]
    assert rstate.alive and [c.fsm.up for c in rstate.checkers] == [True, True]


def test_checker_detail_is_logged_only_with_log_all_failures():
    rt, _ = start(vs(rs("10.0.1.1", "TCP_CHECK {\nretry 2\nlog_all_failures\n}") + rs("10.0.1.2", "TCP_CHECK {\n"
                                                                                      "retry 2\n}")))
    assert feed(rt, "10.0.1.1", True).messages == []
    assert feed(rt, "10.0.1.1", False, detail="TCP connection to x timeout.").messages == ["TCP connection to x "
                                                                                          "timeout."]
    feed(rt, "10.0.1.2", True)
    assert feed(rt, "10.0.1.2", False, detail="TCP connection to y timeout.").messages == []
