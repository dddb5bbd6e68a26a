"""HealthManager end to end: its own thread, real checks against 127.0.0.1, requests applied to a
real engine through the control API, reload, status, stop."""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable

import pytest

from pylvs.control.api import handle
from pylvs.engine.engine import Engine
from pylvs.health.manager import HealthManager
from pylvs.keepalived import loads


class Lvsd:
    """What lvsd would do with the callback: apply each request to its engine, in order."""

    def __init__(self) -> None:
        self.engine = Engine(routes=None)
        self.lock = threading.Lock()
        self.requests: list[dict] = []
        self.errors: list[tuple[dict, dict]] = []
        self.threads: set[str] = set()

    def apply(self, requests: list[dict]) -> None:
        with self.lock:
            self.threads.add(threading.current_thread().name)
            for req in requests:
                self.requests.append(req)
                answer = handle(self.engine, req)
                if not answer["ok"]:
                    self.errors.append((req, answer))

    def dests(self) -> dict[str, int]:
        with self.lock:
            services = handle(self.engine, {"op": "list"})["result"]["services"]
        return {f"{d['addr']}:{d['port']}": d["weight"] for s in services for d in s["dests"]}

    def services(self) -> int:
        with self.lock:
            return len(handle(self.engine, {"op": "list"})["result"]["services"])


class Listener:
    """A TCP port that can be opened and closed: open, the kernel completes handshakes."""

    def __init__(self) -> None:
        self.sock: socket.socket | None = None
        self.port = 0
        self.open()

    def open(self) -> None:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        sock.listen(128)
        self.port = sock.getsockname()[1]
        self.sock = sock
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        assert self.sock is not None
        self.sock.settimeout(0.05)
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
                conn.close()
            except OSError:
                continue

    def close(self) -> None:
        self.stop.set()
        self.thread.join()
        assert self.sock is not None
        self.sock.close()
        self.sock = None


def wait_for(cond: Callable[[], bool], timeout: float = 4.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.02)
    raise AssertionError("condition not reached in time")


def config(text: str):
    return loads(text, echo=False)


def vs(body: str, extra: str = "") -> str:
    return f"{extra}virtual_server 10.0.0.1 80 {{\n lb_algo rr\n lb_kind NAT\n protocol TCP\n delay_loop 0.05\n" \
           f"{body}\n}}\n"


def rs(addr: str, port: int, body: str = "", check: str = "", target: int | None = None) -> str:
    """A real server whose TCP_CHECK goes to 127.0.0.1:`target` (lvsd refuses 127/8 destinations)."""
    check = check or (f"TCP_CHECK {{\nconnect_ip 127.0.0.1\nconnect_port {target or port}\nconnect_timeout 0.3\n"
                      f"warmup 0\ndelay_before_retry 0.05\n}}")
    return f"real_server {addr} {port} {{\n{body}\n{check}\n}}\n"


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def listener():
    lst = Listener()
    yield lst
    if lst.sock is not None:
        lst.close()


@pytest.fixture
def managers():
    started: list[HealthManager] = []
    yield started
    for m in started:
        m.stop(release=False)


def start(text: str, lvsd: Lvsd, managers: list, **kw) -> HealthManager:
    m = HealthManager(config(text), lvsd.apply, bootstrap_delay=0, **kw)
    managers.append(m)
    m.start()
    return m


def test_down_and_up_against_a_real_port(listener, managers):
    lvsd = Lvsd()
    m = HealthManager(config(vs(rs("10.1.0.1", 80, "weight 2", target=listener.port) +
                                rs("10.1.0.2", 80, target=closed_port()))), lvsd.apply, bootstrap_delay=0)
    managers.append(m)
    # both are installed at start (no alpha); the one with nothing behind it goes away
    assert [r["op"] for r in m.start()] == ["add-service", "add-dest", "add-dest"]
    wait_for(lambda: lvsd.dests() == {"10.1.0.1:80": 2})
    listener.close()
    wait_for(lambda: lvsd.dests() == {})
    listener.open()
    wait_for(lambda: lvsd.dests() == {"10.1.0.1:80": 2})
    assert lvsd.errors == [] and lvsd.threads == {"pylvs-health"}
    status = m.status()
    assert status["running"] and status["virtual_servers"][0]["real_servers"][0]["alive"]


def test_inhibit_on_failure_keeps_the_server_at_weight_zero(listener, managers):
    lvsd = Lvsd()
    start(vs(rs("10.1.0.1", 80, "weight 3\ninhibit_on_failure", target=listener.port)), lvsd, managers)
    listener.close()
    wait_for(lambda: lvsd.dests() == {"10.1.0.1:80": 0})
    listener.open()
    wait_for(lambda: lvsd.dests() == {"10.1.0.1:80": 3})


def test_alpha_brings_servers_in_after_their_first_success(listener, managers):
    lvsd = Lvsd()
    m = HealthManager(config(vs("alpha\n" + rs("10.1.0.1", 80, target=listener.port))), lvsd.apply,
                      bootstrap_delay=0)
    managers.append(m)
    assert [r["op"] for r in m.start()] == ["add-service"]
    wait_for(lambda: lvsd.dests() == {"10.1.0.1:80": 1})


def test_notify_scripts_and_fifo(listener, managers, tmp_path):
    lvsd = Lvsd()
    fifo = tmp_path / "notify.log"
    up, down = tmp_path / "up", tmp_path / "down"
    body = f'notify_up "/bin/sh -c \'touch {up}\'"\nnotify_down "/bin/sh -c \'touch {down}\'"'
    start(vs(rs("10.1.0.1", 80, body, target=listener.port),
             extra=f"global_defs {{\n lvs_notify_fifo {fifo}\n}}\n"), lvsd, managers)
    listener.close()
    wait_for(down.exists)
    listener.open()
    wait_for(up.exists)
    wait_for(lambda: fifo.exists() and "UP" in fifo.read_text().splitlines()[-1])
    lines = fifo.read_text().splitlines()
    assert lines[:2] == ["RS [10.1.0.1]:tcp:80 [10.0.0.1]:tcp:80 DOWN", "VS [10.0.0.1]:tcp:80 DOWN"]
    assert "RS [10.1.0.1]:tcp:80 [10.0.0.1]:tcp:80 UP" in lines


def test_misc_dynamic_weight_through_the_manager(managers, tmp_path):
    lvsd = Lvsd()
    weight = tmp_path / "w"
    weight.write_text("12")
    check = f"MISC_CHECK {{\nmisc_path \"/bin/sh -c 'exit $(cat {weight})'\"\nmisc_dynamic\nwarmup 0\n}}"
    start(vs(rs("10.1.0.1", 8080, "weight 1", check)), lvsd, managers)
    wait_for(lambda: lvsd.dests() == {"10.1.0.1:8080": 10})
    weight.write_text("0")
    wait_for(lambda: lvsd.dests() == {"10.1.0.1:8080": 1})
    weight.write_text("1")
    wait_for(lambda: lvsd.dests() == {})


def test_quorum_and_sorry_server_through_the_manager(listener, managers):
    lvsd = Lvsd()
    start(vs("quorum 2\nsorry_server 10.1.0.9 80\n" + rs("10.1.0.1", 80, target=listener.port) +
             rs("10.1.0.2", 80, target=listener.port)), lvsd, managers)
    wait_for(lambda: lvsd.dests() == {"10.1.0.1:80": 1, "10.1.0.2:80": 1})
    listener.close()
    wait_for(lambda: lvsd.dests() == {"10.1.0.9:80": 1})
    listener.open()
    wait_for(lambda: lvsd.dests() == {"10.1.0.1:80": 1, "10.1.0.2:80": 1})


def test_reload_applies_only_the_difference(listener, managers):
    lvsd = Lvsd()
    text = vs(rs("10.1.0.1", 80, "weight 1", target=listener.port) + rs("10.1.0.2", 80, target=closed_port()))
    m = start(text, lvsd, managers)
    wait_for(lambda: lvsd.dests() == {"10.1.0.1:80": 1})
    requests = m.reload(config(text.replace("weight 1", "weight 4")))
    # the failed server is not re-added; the live one gets its new weight
    assert requests == [{"op": "edit-dest", "svc": {"protocol": "tcp", "addr": "10.0.0.1", "port": 80},
                         "dest": {"addr": "10.1.0.1", "port": 80, "method": "masq", "weight": 4,
                                  "u_threshold": 0, "l_threshold": 0, "tun_type": "ipip", "tun_port": 0,
                                  "tun_flags": "nocsum"}}]
    assert lvsd.dests() == {"10.1.0.1:80": 4}
    moved = vs(rs("10.1.0.1", 80, "weight 4", target=listener.port)).replace("10.0.0.1 80", "10.0.0.2 80")
    m.reload(config(moved))
    assert lvsd.services() == 1
    wait_for(lambda: lvsd.dests() == {"10.1.0.1:80": 4})
    assert m.status()["virtual_servers"][0]["name"] == "[10.0.0.2]:tcp:80" and lvsd.errors == []


def test_stop_releases_services_and_runs_omega_notifies(listener, tmp_path):
    lvsd = Lvsd()
    down = tmp_path / "down"
    m = HealthManager(config(vs("omega\n" + rs("10.1.0.1", 80, f'notify_down "/bin/sh -c \'touch {down}\'"',
                                                 target=listener.port))), lvsd.apply, bootstrap_delay=0)
    m.start()
    assert lvsd.services() == 1
    m.stop()
    assert lvsd.services() == 0 and down.exists() and not m.running
    assert m.status()["running"] is False
    m.stop()  # twice is fine


def test_ha_suspend_follows_the_vip(listener, managers, caplog):
    caplog.set_level(logging.INFO, logger="pylvs.health")
    lvsd = Lvsd()
    m = HealthManager(config(vs("ha_suspend\n" + rs("10.1.0.1", 80, target=listener.port))), lvsd.apply,
                      bootstrap_delay=0)
    managers.append(m)
    m.set_vip("10.0.0.1", False)
    m.start()
    listener.close()
    wait_for(lambda: any("Suspending healthchecker" in r.message for r in caplog.records))
    time.sleep(0.2)
    assert lvsd.dests() == {"10.1.0.1:80": 1}  # suspended: no check, no change
    m.set_vip("10.0.0.1", True)
    wait_for(lambda: lvsd.dests() == {})
    assert any("Activating healthchecker" in r.message for r in caplog.records)


def test_vip_probe_finds_local_addresses():
    from pylvs.health.manager import vip_is_local
    assert vip_is_local("127.0.0.1")
    assert not vip_is_local("192.0.2.123")


def test_a_failing_apply_callback_does_not_stop_the_checks(listener, managers, caplog):
    calls: list[int] = []

    def apply(requests):
        calls.append(len(requests))
        raise RuntimeError("lvsd is gone")

    m = HealthManager(config(vs(rs("10.1.0.1", 80, target=listener.port))), apply, bootstrap_delay=0)
    managers.append(m)
    m.start()
    listener.close()
    wait_for(lambda: len(calls) >= 2)
    assert m.status()["virtual_servers"][0]["real_servers"][0]["alive"] is False
    assert any("apply of" in r.message for r in caplog.records)


def test_manager_methods_refuse_to_run_from_the_apply_callback(listener, managers):
    holder: dict = {}

    def apply(requests):
        try:
            holder["m"].status()
        except RuntimeError as exc:
            holder["error"] = str(exc)

    m = HealthManager(config(vs(rs("10.1.0.1", 80, target=listener.port))), apply, bootstrap_delay=0)
    holder["m"] = m
    managers.append(m)
    m.start()
    assert "must not be called from its own thread" in holder["error"]


def test_hundreds_of_real_servers(listener, managers):
    lvsd = Lvsd()
    check = f"TCP_CHECK {{\nconnect_ip 127.0.0.1\nconnect_port {listener.port}\nconnect_timeout 1\nwarmup 0.3\n}}"
    servers = "".join(rs(f"10.9.{i // 200}.{i % 200 + 1}", 80, check=check) for i in range(300))
    t0 = time.monotonic()
    m = start(vs("alpha\ndelay_loop 0.5\n" + servers), lvsd, managers)
    assert time.monotonic() - t0 < 2  # start() does not wait for checks
    wait_for(lambda: len(lvsd.dests()) == 300, timeout=8)
    snapshot = m.status()["virtual_servers"][0]
    assert snapshot["weight_sum"] == 300 and all(r["alive"] for r in snapshot["real_servers"])
    assert lvsd.errors == []


def test_checks_are_spaced_by_delay_loop_and_delay_before_retry(managers, monkeypatch):
    """A scripted probe records when it runs: success -> delay_loop, failure -> delay_before_retry
    while retrying, then delay_loop once down."""
    import asyncio

    from pylvs.health import manager as manager_module
    from pylvs.health.checks.base import Probe
    from pylvs.health.pool import Result

    outcomes = iter([True, False, False, False, True] + [True] * 100)
    times: list[float] = []

    class Scripted(Probe):
        async def run(self, recovering: bool) -> Result:
            times.append(asyncio.get_running_loop().time())
            return Result(next(outcomes))

    monkeypatch.setattr(manager_module, "make_probe", lambda state, env: Scripted(state, env))
    lvsd = Lvsd()
    check = "TCP_CHECK {\nretry 2\ndelay_loop 0.3\ndelay_before_retry 0.1\nwarmup 0\n}"
    start(vs(rs("10.1.0.1", 80, check=check)), lvsd, managers)
    wait_for(lambda: len(times) >= 6)
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)][:5]
    for gap, want in zip(gaps, [0.3, 0.1, 0.1, 0.3, 0.3], strict=True):
        assert want - 0.01 <= gap < want + 0.15, gaps
    ops = [r["op"] for r in lvsd.requests]
    assert ops == ["add-service", "add-dest", "del-dest", "add-dest"]


def test_restart_after_stop_without_release_resumes_the_table(listener):
    lvsd = Lvsd()
    m = HealthManager(config(vs(rs("10.1.0.1", 80, target=listener.port))), lvsd.apply, bootstrap_delay=0)
    m.start()
    m.stop(release=False)
    assert lvsd.services() == 1
    assert m.start() == []  # nothing to change: no EEXIST from adding the same service again
    m.stop()
    assert lvsd.services() == 0 and lvsd.errors == []
