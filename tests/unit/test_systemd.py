"""sd_notify datagrams, journal priorities and the shipped units (lvsd under systemd in the lab:
tests/integration/test_systemd_notify.py)."""

from __future__ import annotations

import logging
import os
import re
import shutil
import socket
import subprocess
import sys

import pytest

from pylvs.cli import lvsd
from pylvs.systemd import journal, notify, units


def receiver(address: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(address)
    sock.settimeout(2)
    return sock


def fields(sock: socket.socket) -> dict[str, str]:
    return dict(line.split("=", 1) for line in sock.recv(4096).decode().split("\n"))


def test_notifier_speaks_to_a_path_and_an_abstract_socket(tmp_path):
    path = str(tmp_path / "notify")
    abstract = f"@pylvs-test-{os.getpid()}"
    with receiver(path) as by_path, receiver("\0" + abstract[1:]) as by_name:
        for sock, address in ((by_path, path), (by_name, abstract)):
            n = notify.Notifier(address)
            before = notify.monotonic_usec()
            n.reloading("reloading x.conf")
            got = fields(sock)
            assert got["RELOADING"] == "1" and got["STATUS"] == "reloading x.conf"
            assert before <= int(got["MONOTONIC_USEC"]) <= notify.monotonic_usec()
            n.ready("ok")
            assert fields(sock) == {"READY": "1", "STATUS": "ok"}
            n.stopping("bye")
            assert fields(sock) == {"STOPPING": "1", "STATUS": "bye"}
            n.close()


def test_notifier_takes_the_socket_out_of_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "n"))
    n = notify.Notifier.from_environment()
    assert n.enabled and "NOTIFY_SOCKET" not in os.environ  # health-check scripts must not inherit it
    assert not notify.Notifier.from_environment().enabled


def test_a_notifier_whose_socket_is_gone_logs_once_and_goes_quiet(tmp_path, caplog):
    n = notify.Notifier(str(tmp_path / "nobody-listens"))
    with caplog.at_level(logging.WARNING):
        n.ready("a")
        n.ready("b")
    assert len(caplog.records) == 1 and "not sent" in caplog.records[0].getMessage()
    assert not n.enabled


def run_logging(env: dict[str, str], stderr) -> None:
    code = ("import logging; from pylvs.systemd import journal; journal.configure_logging('lvsd', logging.DEBUG); "
            "log = logging.getLogger('x'); log.error('bad'); log.warning('hmm'); log.info('fine'); "
            "log.debug('detail')")
    subprocess.run([sys.executable, "-c", code], env=env, stderr=stderr, check=True, timeout=30)


def test_logs_carry_syslog_priorities_when_stderr_is_the_journal_stream(tmp_path):
    path = tmp_path / "stderr"
    with open(path, "wb") as f:
        st = os.fstat(f.fileno())
        run_logging({**os.environ, "JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}, f)
    assert path.read_text() == "<3>bad\n<4>hmm\n<6>fine\n<7>detail\n"
    with open(path, "wb") as f:  # the variable names another stream: stderr was redirected
        run_logging({**os.environ, "JOURNAL_STREAM": "1:2"}, f)
    assert path.read_text() == "lvsd: ERROR bad\nlvsd: WARNING hmm\nlvsd: INFO fine\nlvsd: DEBUG detail\n"


def test_a_traceback_keeps_its_priority_on_every_line():
    record = logging.LogRecord("x", logging.ERROR, __file__, 1, "first\nsecond", None, None)
    assert journal.JournalFormatter("%(message)s").format(record) == "<3>first\n<3>second"


@pytest.mark.parametrize("name", units.UNITS)
def test_units_print_with_this_lvsd_and_the_shared_sandbox(name, capsys):
    assert lvsd.main(["--print-unit", name]) == 0
    text = capsys.readouterr().out
    assert "@" + "LVSD@" not in text and "@HARDENING@" not in text
    start = next(line for line in text.splitlines() if line.startswith("ExecStart="))
    assert start.startswith(f"ExecStart={units.lvsd_command()} $LVSD_OPTS")
    for line in ("Type=notify", "ExecReload=/bin/kill -HUP $MAINPID", "NotifyAccess=main", "KillMode=mixed",
                 "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK AF_PACKET"):
        assert line in text.splitlines()
    caps = next(line for line in text.splitlines() if line.startswith("CapabilityBoundingSet=")).split("=")[1].split()
    assert {"CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_BPF"} <= set(caps)


def test_the_unit_names_the_lvsd_script_that_prints_it(monkeypatch, tmp_path):
    script = tmp_path / "bin" / "lvsd"
    script.parent.mkdir()
    script.write_text("")
    monkeypatch.setattr(sys, "argv", [str(script)])
    assert units.lvsd_command() == str(script)
    monkeypatch.setattr(sys, "argv", ["/somewhere/pylvs/cli/lvsd.py"])
    assert units.lvsd_command() == f"{sys.executable} -m pylvs.cli.lvsd"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
@pytest.mark.parametrize("name", units.UNITS)
def test_systemd_analyze_verifies_the_units(name, tmp_path):
    path = tmp_path / name.replace("@.", "@test.")  # a template is verified as an instance
    path.write_text(units.render(name, command=sys.executable))
    r = subprocess.run(["systemd-analyze", "verify", "--man=no", str(path)], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0 and r.stderr == "", r.stderr


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_systemd_analyze_security_rates_the_sandbox_ok(tmp_path):
    path = tmp_path / "lvsd.service"
    path.write_text(units.render("lvsd.service", command=sys.executable))
    r = subprocess.run(["systemd-analyze", "security", "--offline=true", str(path)], capture_output=True,
                       text=True, timeout=60)
    exposure = float(re.search(r"Overall exposure level for lvsd.service: ([\d.]+)", r.stdout)[1])
    assert exposure <= 4.0, r.stdout  # 3.6 today; CAP_SYS_ADMIN (BPF before kernel 5.8) costs the most
