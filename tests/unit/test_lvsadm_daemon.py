"""lvsadm against the real daemon logic (pylvs.control.api on an Engine), without sockets or root."""

from __future__ import annotations

import io
from dataclasses import fields

from pylvs.cli import lvsadm as lvsadm_cli
from pylvs.cli.lvsadm import run
from pylvs.control import api
from pylvs.engine.engine import Engine
from pylvs.engine.hops import StaticRoutes

RULES = """\
-A -t 203.0.113.100:80 -s rr --proxy-protocol v2
-P -t 203.0.113.100:80 -z 192.0.2.200
-P -t 203.0.113.100:80 -z 192.0.2.201
-a -t 203.0.113.100:80 -r 192.0.2.11:8080 --fullnat -w 1
-a -t 203.0.113.100:80 -r 192.0.2.12:8080 --fullnat -w 2
-A -t 203.0.113.100:443 -s wlc -p 600 -M 255.255.255.0
-a -t 203.0.113.100:443 -r 192.0.2.11:443 -m -w 3
-A -u 203.0.113.100:53 -s sh -b sh-fallback,sh-port
-a -u 203.0.113.100:53 -r 192.0.2.13:5353 -m -w 1
"""


class Direct:
    def __init__(self) -> None:
        self.engine = Engine(StaticRoutes())

    def request(self, obj):
        return api.handle(self.engine, obj)


def lvsadm(daemon, *args, stdin=""):
    out, err = io.StringIO(), io.StringIO()
    code = run(list(args), transport=daemon, stdin=io.StringIO(stdin), stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def test_save_restore_round_trip_through_the_daemon():
    first = Direct()
    assert lvsadm(first, "-R", stdin=RULES)[0] == 0
    code, saved, _ = lvsadm(first, "-S", "-n")
    assert code == 0
    assert sorted(saved.splitlines()) == sorted(RULES.splitlines())
    second = Direct()
    assert lvsadm(second, "-R", stdin=saved)[0] == 0
    assert lvsadm(second, "-S", "-n")[1] == saved


def test_restore_atomic_is_all_or_nothing_and_names_the_bad_line():
    d = Direct()
    bad = RULES + "-a -t 203.0.113.100:80 -r 192.0.2.11:8080 --fullnat -w 1\n"  # a duplicate destination
    code, _, err = lvsadm(d, "-R", "--atomic", stdin=bad)
    assert (code, err) == (255, "line 10: Destination already exists\n")
    assert len(d.engine.table) == 0


def test_restore_reapplies_a_save_file_over_a_live_table():
    d = Direct()
    assert lvsadm(d, "-R", stdin=RULES) == (0, "", "")
    listing = lvsadm(d, "-S", "-n")[1]
    extra = "-a -t 203.0.113.100:443 -r 192.0.2.12:443 -m -w 1\n"
    code, out, err = lvsadm(d, "-R", stdin=RULES + extra)  # every old line is a duplicate now
    assert (code, out) == (0, "")
    service, dest = "Service already exists\n", "Destination already exists\n"
    assert err == service + "Local address already exists\n" * 2 + dest * 2 + service + dest + service + dest
    assert lvsadm(d, "-S", "-n")[1] == listing.replace(
        "-a -t 203.0.113.100:443 -r 192.0.2.11:443 -m -w 3\n",
        "-a -t 203.0.113.100:443 -r 192.0.2.11:443 -m -w 3\n-a -t 203.0.113.100:443 -r 192.0.2.12:443 -m -w 1\n")


def test_errors_as_ipvsadm_prints_them():
    d = Direct()
    assert lvsadm(d, "-A", "-t", "203.0.113.100:80", "-s", "rr")[0] == 0
    code, _, err = lvsadm(d, "-A", "-t", "203.0.113.100:80", "-s", "rr")
    assert (code, err.strip()) == (255, "Service already exists")
    code, _, err = lvsadm(d, "-A", "-t", "203.0.113.100:81", "-s", "nosuch")
    assert (code, err.strip()) == (255, "Scheduler or persistence engine not found")
    code, _, err = lvsadm(d, "-d", "-t", "203.0.113.100:80", "-r", "192.0.2.9:80")
    assert (code, err.strip()) == (255, "No such destination")
    code, _, err = lvsadm(d, "-a", "-t", "203.0.113.100:99", "-r", "192.0.2.9:80")
    assert (code, err.strip()) == (255, "Service not defined")


def test_a_long_restore_is_a_few_requests_of_runs_of_lines(monkeypatch):
    monkeypatch.setattr(lvsadm_cli, "RESTORE_RUN", 800)  # 64 in use: each request a few ms of lvsd's loop
    d = Direct()
    sent = []
    request = d.request
    d.request = lambda obj: sent.append(obj["op"]) or request(obj)  # type: ignore[method-assign]
    lines = "".join(f"-A -u 10.0.{i >> 8}.{i & 255}:53 -s rr\n" for i in range(1000))
    lines += "".join(f"-a -u 10.0.{i >> 8}.{i & 255}:53 -r 192.0.2.9 -m\n" for i in range(1000))
    assert lvsadm(d, "-R", stdin=lines) == (0, "", "")
    assert sent == ["sequence"] * 3 and len(d.engine.table) == 1000
    assert all(len(svc.dests) == 1 for svc in d.engine.table)


def test_pe_sip_is_kept_through_edits_and_a_bogus_one_refused_as_ipvs_does():
    d = Direct()
    assert lvsadm(d, "-A", "-u", "203.0.113.100:5060", "-s", "rr", "-p", "60", "--pe", "sip") == (0, "", "")
    assert lvsadm(d, "-E", "-u", "203.0.113.100:5060", "-s", "wrr", "-p", "120", "--pe", "sip") == (0, "", "")
    assert lvsadm(d, "-S", "-n")[1] == "-A -u 203.0.113.100:5060 -s wrr -p 120 --pe sip\n"
    assert lvsadm(d, "-L", "-n")[1].split("\n")[3] == "UDP  203.0.113.100:5060 wrr persistent 120 pe sip"
    nope = (255, "", "Scheduler or persistence engine not found\n")
    assert lvsadm(d, "-A", "-u", "203.0.113.100:5061", "--pe", "bogus") == nope
    assert lvsadm(d, "-E", "-u", "203.0.113.100:5060", "--pe", "bogus") == nope
    # the service's (non)existence is found first, as ip_vs_ctl does
    assert lvsadm(d, "-A", "-u", "203.0.113.100:5060", "--pe", "bogus") == (255, "", "Service already exists\n")
    assert lvsadm(d, "-E", "-u", "203.0.113.100:5062", "--pe", "bogus") == (255, "", "No such service\n")
    assert lvsadm(d, "-E", "-u", "203.0.113.100:5060", "-s", "rr") == (0, "", "")  # -E without --pe clears it
    assert lvsadm(d, "-S", "-n")[1] == "-A -u 203.0.113.100:5060 -s rr\n"


def test_weights_up_to_int_max():
    d = Direct()
    assert lvsadm(d, "-A", "-t", "203.0.113.100:80")[0] == 0
    assert lvsadm(d, "-a", "-t", "203.0.113.100:80", "-r", "192.0.2.11", "-m", "-w", "70000") == (0, "", "")
    assert lvsadm(d, "-e", "-t", "203.0.113.100:80", "-r", "192.0.2.11", "-m", "-w", "2147483647") == (0, "", "")
    assert "-r 192.0.2.11:80 -m -w 2147483647" in lvsadm(d, "-S", "-n")[1]


def test_shadow_copy_keeps_every_configuration_field():
    d = Direct()
    assert lvsadm(d, "-R", stdin=RULES + "-A -u 203.0.113.100:5060 -s rr -p 60 --pe sip\n") == (0, "", "")
    copy = api.shadow_copy(d.engine.table)
    runtime = {"dests", "laddrs", "sched", "stats"}
    for orig, clone in zip(d.engine.table, copy, strict=True):
        for f in fields(orig):
            if f.name not in runtime:
                assert getattr(clone, f.name) == getattr(orig, f.name), f.name
        assert [la.addr for la in clone.laddrs] == [la.addr for la in orig.laddrs]
        for dest, dclone in zip(orig.dests, clone.dests, strict=True):
            assert dclone is not dest
            for f in fields(dest):
                if f.name != "stats":
                    assert getattr(dclone, f.name) == getattr(dest, f.name), f.name


def test_localhost_as_a_real_server_is_accepted_as_the_kernel_does():
    d = Direct()
    assert lvsadm(d, "-A", "-t", "203.0.113.100:80")[0] == 0
    assert lvsadm(d, "-a", "-t", "203.0.113.100:80", "-r", "127.0.0.1") == (0, "", "")
    assert "-a -t 203.0.113.100:80 -r 127.0.0.1:80 -g -w 1" in lvsadm(d, "-S", "-n")[1]


SVC = {"protocol": "tcp", "addr": "203.0.113.100", "port": 80}


def test_a_sequence_answers_op_by_op_and_goes_on_after_refusals():
    d = Direct()
    answer = d.request({"op": "sequence", "ops": [
        {"op": "add-service", "service": SVC}, {"op": "add-service", "service": SVC},
        {"op": "nosuch"}, {"op": "batch", "ops": []},
        {"op": "add-dest", "svc": SVC, "dest": {"addr": "192.0.2.11", "port": 80}}]})
    assert answer == {"ok": True, "result": [
        {"ok": True, "result": None},
        {"ok": False, "errno": "EEXIST", "error": "Service already exists"},
        {"ok": False, "errno": "EINVAL", "error": "unknown op 'nosuch'"},
        {"ok": False, "errno": "EINVAL", "error": "batch cannot be part of a sequence"},
        {"ok": True, "result": None}]}
    assert [len(svc.dests) for svc in d.engine.table] == [1]


def test_registered_ops_are_served_and_kept_out_of_atomic_batches():
    control = api.Control(Engine(StaticRoutes()))
    control.register("hello", lambda req: {"hi": req.get("name")})
    assert control.handle({"op": "hello", "name": "x"}) == {"ok": True, "result": {"hi": "x"}}
    assert control.handle({"op": "batch", "ops": [{"op": "add-service", "service": SVC}, {"op": "hello"}]}) == \
        {"ok": False, "errno": "EINVAL", "error": "hello cannot be part of a batch", "line": 1}
    assert len(control.engine.table) == 0
    assert control.handle({"op": "sequence", "ops": [{"op": "hello", "name": "y"}]})["result"] == \
        [{"ok": True, "result": {"hi": "y"}}]
    assert api.handle(control.engine, {"op": "hello"})["error"] == "unknown op 'hello'"  # per Control


def test_restore_refuses_a_daemon_that_answers_a_sequence_whole():
    class Old:
        def request(self, obj):
            return {"ok": True, "result": None}
    assert lvsadm(Old(), "-R", stdin="-A -t 1.2.3.4:80\n") == (1, "", "lvsd did not answer the sequence op by op\n")
