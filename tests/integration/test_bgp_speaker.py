"""lvsd's BGP speaker against a BIRD router: the VIP is announced exactly while a service on it has a
real server with weight > 0 (health checks and lvsadm both count), a BIRD that dies is started again,
and a director that dies, even by kill -9, is withdrawn at once rather than after the hold time
(here 30 s): BIRD dies with lvsd and its TCP session closes."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time

import pytest

from pylvs.lab.ecmp import PORT, VIP, EcmpLab
from pylvs.lab.netns import wait_for

HOLD = 30  # long on purpose: nothing below may wait for it

pytestmark = pytest.mark.skipif(shutil.which("bird") is None and shutil.which("/usr/sbin/bird") is None,
                                reason="BIRD 2 is missing (make deps installs bird2)")

KEEPALIVED = """
virtual_server {vip} {port} {{
    delay_loop 1
    lb_algo mh
    lb_kind DR
    protocol TCP
{real_servers}
}}
"""
REAL_SERVER = """    real_server {addr} {port} {{
        weight 1
        TCP_CHECK {{
            connect_timeout 1
            retry 1
            delay_before_retry 1
        }}
    }}"""


@pytest.fixture(scope="module")
def lab():
    lab = EcmpLab(n_directors=1, n_rs=2, hold_time=HOLD).up()
    try:
        yield lab
    finally:
        lab.down()
        assert lab.net.leftovers() == []


@pytest.fixture
def director(lab):
    d = lab.directors[0]
    yield d
    d.stop()
    lab.wait_nexthops(set())


def announced(lab) -> bool:
    return lab.nexthops() == {lab.directors[0].addr}


def test_health_checks_decide_the_announcement(lab, director):
    conf = os.path.join(lab.net.tmp, "keepalived.conf")
    with open(conf, "w") as f:
        f.write(KEEPALIVED.format(vip=VIP, port=PORT, real_servers="\n".join(
            REAL_SERVER.format(addr=addr, port=PORT) for addr in lab.rips)))
    director.start("--keepalived", conf)
    lab.wait_nexthops({director.addr}, timeout=15)
    assert lab.net.exec("client", "curl", "-sS", "--max-time", "3", f"http://{VIP}/").stdout.strip() in ("rs1", "rs2")
    lab.stop_nginx("rs1")
    wait_for(lambda: lab.rips[0] not in director.lvsadm("-L", "-n").stdout, timeout=10, what="rs1 to fail its check")
    assert announced(lab)  # rs2 still serves
    lab.stop_nginx("rs2")
    failed = time.monotonic()
    wait_for(lambda: not announced(lab), timeout=10, what="the VIP to be withdrawn")
    withdrawn = time.monotonic() - failed
    assert director.bgp()["announced"] == []
    lab.start_nginx("rs2")
    back = lab.wait_nexthops({director.addr}, timeout=10)
    lab.start_nginx("rs1")
    print(f"\nhealth checks: withdrawn {withdrawn:.2f}s after the last real server died, back {back:.2f}s after one "
          f"returned (delay_loop 1, retry 1)")


def test_weights_set_by_lvsadm_and_a_restarted_bird(lab, director):
    director.start()
    wait_for(lambda: director.bgp()["peers"][0]["state"] == "Established", timeout=15, what="the session")
    assert lab.nexthops() == set() and director.bgp()["announced"] == []  # no table, nothing announced
    director.lvsadm("-R", stdin=lab.rules())
    lab.wait_nexthops({director.addr}, timeout=5)
    for rip in lab.rips:
        director.lvsadm("-e", "-t", f"{VIP}:{PORT}", "-r", f"{rip}:{PORT}", "-g", "-w", "0")  # quiesced
    quiesced = lab.wait_nexthops(set(), timeout=5)
    director.lvsadm("-e", "-t", f"{VIP}:{PORT}", "-r", f"{lab.rips[1]}:{PORT}", "-g", "-w", "3")
    lab.wait_nexthops({director.addr}, timeout=5)
    print(f"\nlvsadm: withdrawn {quiesced:.2f}s after the last weight went to 0")
    wait_for(lambda: director.bgp()["peers"][0]["exported"] == 1, timeout=3, what="the export count")
    status = director.bgp()
    assert status["announced"] == [VIP] and status["wanted"] == [VIP], status
    os.kill(status["pid"], signal.SIGKILL)  # BIRD alone dies: lvsd starts it again, announcing the same
    wait_for(lambda: director.bgp()["restarts"] == 1, timeout=10, what="BIRD to be restarted")
    lab.wait_nexthops({director.addr}, timeout=15)
    assert "BIRD exited (code -9); starting it again" in director.lvsd_log()


def test_kill_9_withdraws_at_once_a_restart_announces_again_and_sigterm_withdraws_first(lab, director):
    director.start("--config", write_rules(lab))
    lab.wait_nexthops({director.addr}, timeout=15)
    bird = director.bgp()["pid"]
    killed = time.monotonic()
    os.kill(director.proc.pid, signal.SIGKILL)  # lvsd alone, as the OOM killer would
    lab.wait_nexthops(set(), timeout=HOLD / 3)
    withdrawn = time.monotonic() - killed
    print(f"\nkill -9 lvsd: withdrawn after {withdrawn:.2f}s (hold time {HOLD}s)")
    assert withdrawn < 3.0
    wait_for(lambda: not os.path.exists(f"/proc/{bird}"), timeout=5, what="BIRD to die with lvsd")
    assert subprocess.run(["ip", "netns", "pids", lab.net.name(director.role)], capture_output=True,
                          text=True).stdout.split() == []
    # Started again (as systemd would): it takes over what the dead one left and announces again.
    director.start("--config", write_rules(lab))
    lab.wait_nexthops({director.addr}, timeout=15)
    # A graceful stop withdraws first, then ends the session, and leaves nothing behind.
    runtime = director.bgp()["runtime_dir"]
    assert sorted(os.listdir(runtime)) == ["bird.conf", "bird.ctl"]
    stopping = time.monotonic()
    director.proc.send_signal(signal.SIGTERM)
    lab.wait_nexthops(set(), timeout=5)
    withdrawn = time.monotonic() - stopping
    assert director.proc.wait(10) == 0
    print(f"\nSIGTERM: withdrawn after {withdrawn:.2f}s")
    log = director.lvsd_log()
    assert f"bgp: withdrawing {VIP}/32" in log.split("lvsd running")[-1], log
    assert not os.path.exists(runtime)


def write_rules(lab) -> str:
    path = os.path.join(lab.net.tmp, "rules.save")
    with open(path, "w") as f:
        f.write(lab.rules())
    return path
