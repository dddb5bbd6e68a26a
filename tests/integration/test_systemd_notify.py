"""lvsd under a fake systemd: READY, RELOADING and STOPPING on $NOTIFY_SOCKET, priorities in the journal.

A real AF_UNIX datagram socket plays systemd's notify socket; lvsd starts in a lab's director
namespace with $NOTIFY_SOCKET naming it and $JOURNAL_STREAM naming its stderr, as systemd would.
"""

from __future__ import annotations

import os
import signal
import socket
import time

import pytest

from pylvs.lab.topology import VIP, NatLab

CONF = """virtual_server {vip} 80 {{
    lb_algo rr
    lb_kind NAT
    protocol TCP
{servers}}}
"""
SERVER = "    real_server {addr} 8080 {{\n        weight 1\n    }}\n"


def conf(*addrs: str) -> str:
    return CONF.format(vip=VIP, servers="".join(SERVER.format(addr=a) for a in addrs))


class FakeSystemd:
    def __init__(self, path: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)
        self.seen: list[dict[str, str]] = []

    def next(self, key: str, timeout: float = 15.0) -> dict[str, str]:
        """The next notification that sets `key` (STATUS-only updates in between are kept in `seen`)."""
        deadline = time.monotonic() + timeout
        while True:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            message = dict(line.split("=", 1) for line in self.sock.recv(4096).decode().split("\n"))
            self.seen.append(message)
            if key in message:
                return message


@pytest.fixture
def lab():
    lab = NatLab(n_rs=2).up(http=False, udp=False)
    try:
        yield lab
    finally:
        lab.down()


def rules(lab) -> list[str]:
    return lab.lvsadm("-S", "-n").stdout.splitlines()


def test_ready_reloading_ready_stopping(lab, monkeypatch):
    path = os.path.join(lab.net.tmp, "keepalived.conf")
    with open(path, "w") as f:
        f.write(conf("192.0.2.11"))
    systemd = FakeSystemd(os.path.join(lab.net.tmp, "notify"))
    log = os.path.join(lab.net.tmp, "lvsd.log")
    with open(log, "ab") as f:  # lvsd's stderr: systemd names its device and inode in $JOURNAL_STREAM
        st = os.fstat(f.fileno())
    monkeypatch.setenv("NOTIFY_SOCKET", systemd.sock.getsockname())
    monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")
    lab.start_lvsd("--keepalived", path)

    ready = systemd.next("READY")
    assert ready["READY"] == "1"
    assert ready["STATUS"].startswith("forwarding on ") and "1 virtual services, 1 real servers" in ready["STATUS"]
    assert rules(lab) == [f"-A -t {VIP}:80 -s rr", f"-a -t {VIP}:80 -r 192.0.2.11:8080 -m -w 1"]  # table first

    with open(path, "w") as f:
        f.write(conf("192.0.2.11", "192.0.2.12"))
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    os.kill(lab.lvsd.pid, signal.SIGHUP)
    reloading = systemd.next("RELOADING")
    assert reloading["RELOADING"] == "1" and reloading["STATUS"] == f"reloading {path}"
    assert before <= int(reloading["MONOTONIC_USEC"]) <= time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    ready = systemd.next("READY")
    assert ready["STATUS"].startswith(f"reloaded {path}: 1 change(s); 1 virtual services, 2 real servers")
    assert f"-a -t {VIP}:80 -r 192.0.2.12:8080 -m -w 1" in rules(lab)  # READY=1 once the change is in

    with open(path, "w") as f:
        f.write("virtual_server 203.0.113.100 80 {\n  lb_algo\n}\n")  # fatal: lvsd keeps its table
    os.kill(lab.lvsd.pid, signal.SIGHUP)
    assert systemd.next("RELOADING")["RELOADING"] == "1"
    ready = systemd.next("READY")
    assert ready["STATUS"].startswith("reload failed, running configuration kept: ")
    assert len(rules(lab)) == 3

    with open(path, "w") as f:  # a reload lvsadm asks for also ends in READY=1
        f.write(conf("192.0.2.12"))
    lab.lvsadm("--reload")
    ready = systemd.next("READY")
    assert ready["STATUS"].startswith(f"reloaded {path}: 1 change(s); 1 virtual services, 1 real servers")

    pid = lab.lvsd.pid
    os.kill(pid, signal.SIGTERM)
    stopping = systemd.next("STOPPING")
    assert stopping["STOPPING"] == "1"
    assert lab.stop_lvsd() == 0
    systemd.sock.close()

    with open(log) as f:
        lines = f.read().splitlines()
    assert lines and all(line[:3] in ("<3>", "<4>", "<6>", "<7>") for line in lines), lines
    assert any(line.startswith("<6>lvsd running on ") for line in lines)
    assert any(line.startswith("<3>Reload failed, keeping the running configuration") for line in lines)
