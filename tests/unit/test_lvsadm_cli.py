"""lvsadm end to end against an in-process fake lvsd: commands, listings, -R batches, -S/-R round trip,
the real Unix-socket client, and ipvsadm's exit codes."""

from __future__ import annotations

import errno
import io
import os
import shlex
import shutil
import tempfile
import time

import pytest

from pylvs.cli import lvsadm
from pylvs.control import client as control_client
from pylvs.ipvsadm import args as ipvsadm_args
from pylvs.ipvsadm import format as ipvsadm_format
from tests.unit.fake_lvsd import FakeLvsd

TRYHELP = "Try `lvsadm -h' or 'lvsadm --help' for more information.\n"


@pytest.fixture(autouse=True)
def no_dns(monkeypatch):
    monkeypatch.setattr(ipvsadm_args, "_host_to_addr", lambda name: None)


class Run:
    """One lvsadm invocation's outcome."""

    def __init__(self, fake: FakeLvsd, line: str | list[str], stdin: str = ""):
        out, err = io.StringIO(), io.StringIO()
        argv = shlex.split(line) if isinstance(line, str) else line
        self.code = lvsadm.run(argv, transport=fake, stdin=io.StringIO(stdin), stdout=out, stderr=err)
        self.out, self.err = out.getvalue(), err.getvalue()


def ends(text: str) -> str:
    lines = text.strip("\n").split("\n")
    assert all(line.endswith("|") for line in lines)
    return "".join(line[:-1] + "\n" for line in lines)


@pytest.fixture
def fake() -> FakeLvsd:
    return FakeLvsd()


def ok(fake: FakeLvsd, line: str) -> None:
    r = Run(fake, line)
    assert (r.code, r.out, r.err) == (0, "", ""), line


SETUP = """
-A -t 192.168.0.1:80 -s wlc -p 300 -M 255.255.255.0
-a -t 192.168.0.1:80 -r 10.0.0.2:8080 -m -w 1
-a -t 192.168.0.1:80 -r 10.0.0.3:8080 -m -w 0
-A -u 192.168.0.1:53 -s sh -b sh-fallback,sh-port
-a -u 192.168.0.1:53 -r 10.0.0.2:53
-A -f 1 -s rr
-a -f 1 -r 10.0.0.4 -i -w 2
-A -t [2001:db8::1]:443 -s mh
"""


def setup_table(fake: FakeLvsd) -> None:
    for line in SETUP.strip().splitlines():
        ok(fake, line)


def test_commands_then_listing(fake):
    setup_table(fake)
    r = Run(fake, "-Ln")
    assert r.code == 0 and r.err == ""
    assert r.out == ends("""
IP Virtual Server version 1.2.1 (size=4096)|
Prot LocalAddress:Port Scheduler Flags|
  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn|
TCP  192.168.0.1:80 wlc persistent 300 mask 255.255.255.0|
  -> 10.0.0.2:8080                Masq    1      0          0         |
  -> 10.0.0.3:8080                Masq    0      0          0         |
UDP  192.168.0.1:53 sh (sh-fallback,sh-port)|
  -> 10.0.0.2:53                  Route   1      0          0         |
TCP  [2001:db8::1]:443 mh|
FWM  1 rr|
  -> 10.0.0.4:0                   Tunnel  2      0          0         |
""")
    # kernel order: newest destination first
    assert Run(fake, "-Ln --nosort -t 192.168.0.1:80").out == ends("""
Prot LocalAddress:Port Scheduler Flags|
  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn|
TCP  192.168.0.1:80 wlc persistent 300 mask 255.255.255.0|
  -> 10.0.0.3:8080                Masq    0      0          0         |
  -> 10.0.0.2:8080                Masq    1      0          0         |
""")


def test_requests_sent_match_the_protocol(fake):
    ok(fake, "-A -t 1.2.3.4:80 -s rr")
    ok(fake, "-a -t 1.2.3.4:80 -r 10.0.0.1:8080 -m")
    assert fake.requests == [
        {"op": "add-service", "service": {"protocol": "tcp", "addr": "1.2.3.4", "port": 80, "scheduler": "rr",
                                          "flags": 0, "timeout": 0, "netmask": "255.255.255.255", "pe": ""}},
        {"op": "add-dest", "svc": {"protocol": "tcp", "addr": "1.2.3.4", "port": 80},
         "dest": {"addr": "10.0.0.1", "port": 8080, "method": "masq", "weight": 1, "u_threshold": 0,
                  "l_threshold": 0, "tun_type": "ipip", "tun_port": 0, "tun_flags": "nocsum"}},
    ]


def test_edit_is_a_full_replace(fake):
    ok(fake, "-A -t 1.2.3.4:80 -s rr -p 60")
    ok(fake, "-E -t 1.2.3.4:80")
    assert Run(fake, "-Sn").out == "-A -t 1.2.3.4:80 -s wlc\n"


def test_no_arguments_lists_with_names(fake):
    r = Run(fake, [])
    assert r.code == 0
    assert r.out == ends("""
IP Virtual Server version 1.2.1 (size=4096)|
Prot LocalAddress:Port Scheduler Flags|
  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn|
""")
    assert [q["op"] for q in fake.requests] == ["get-info", "list"]


def test_daemon_errors_use_ipvsadm_text_and_exit_255(fake):
    ok(fake, "-A -t 1.2.3.4:80")
    cases = [
        ("-A -t 1.2.3.4:80", "Service already exists\n"),
        ("-A -t 1.2.3.5:80 -s nosuch", "Scheduler or persistence engine not found\n"),
        ("-E -t 1.2.3.5:80", "No such service\n"),
        ("-D -t 1.2.3.5:80", "No such service\n"),
        ("-a -t 1.2.3.5:80 -r 10.0.0.1", "Service not defined\n"),
        ("-e -t 1.2.3.4:80 -r 10.0.0.1", "No such destination\n"),
        ("-d -t 1.2.3.4:80 -r 10.0.0.1", "No such destination\n"),
        ("-Z -t 1.2.3.5:80", "No such service\n"),
        ("--stop-daemon master", "No daemon is running\n"),
    ]
    for line, message in cases:
        r = Run(fake, line)
        assert (r.code, r.out, r.err) == (255, "", message), line
    ok(fake, "-a -t 1.2.3.4:80 -r 10.0.0.1")
    assert Run(fake, "-a -t 1.2.3.4:80 -r 10.0.0.1").err == "Destination already exists\n"


def test_error_text_falls_back_to_the_errno_table():
    assert lvsadm.error_text("add-service", {"ok": False, "errno": "EEXIST"}) == "Service already exists"
    assert lvsadm.error_text("del-dest", {"ok": False, "errno": "ESRCH"}) == "Service not defined"
    assert lvsadm.error_text("flush", {"ok": False, "errno": "EPERM"}) == "Permission denied (you must be root)"
    assert lvsadm.error_text("flush", {"ok": False, "errno": "ENOSPC"}) == os.strerror(28)


def test_listing_errors_exit_1(fake):
    r = Run(fake, "-L -n -t 1.2.3.4:80")
    assert (r.code, r.out, r.err) == (1, "", "No such service\n")


def test_other_listings(fake):
    fake.conns = [{"protocol": "TCP", "state": "ESTABLISHED", "expires": 893, "caddr": "172.16.0.9",
                   "cport": 51234, "vaddr": "192.168.0.1", "vport": 80, "daddr": "10.0.0.2", "dport": 8080,
                   "template": False}]
    assert Run(fake, "-Lnc").out == ends("""
IPVS connection entries|
pro expire state       source             virtual            destination|
TCP 14:53  ESTABLISHED 172.16.0.9:51234   192.168.0.1:80     10.0.0.2:8080|
""")
    ok(fake, "--set 600 0 30")
    assert Run(fake, "-L --timeout").out == "Timeout (tcp tcpfin udp): 600 120 30\n"
    ok(fake, "--start-daemon master --syncid 4")
    assert Run(fake, "-L --daemon").out == "master sync daemon (mcast=eth0, syncid=4)\n"
    assert Run(fake, "--start-daemon master").err == "Daemon has already run\n"
    ok(fake, "-A -t 1.2.3.4:80")
    ok(fake, "-P -t 1.2.3.4:80 -z 10.0.0.9")
    assert Run(fake, "-G").out == ends("""
VIP:VPORT            TOTAL    SNAT_IP              CONFLICTS  CONNS     |
1.2.3.4:80           1        |
                              10.0.0.9             0          0         |
""")


def test_help_and_version_need_no_daemon():
    r = Run(None, "-h")  # type: ignore[arg-type]
    assert r.code == 0 and r.err == ""
    assert r.out.startswith("lvsadm v0.1.0 (ipvsadm v1.31 compatible)\nUsage:\n  lvsadm -A|E virtual-service ")
    assert "  --fullnat " in r.out and "--control" in r.out
    r = Run(None, "--version")  # type: ignore[arg-type]
    assert (r.code, r.out) == (0, "lvsadm v0.1.0 (ipvsadm v1.31 compatible)\n")


def test_parse_errors_need_no_daemon():
    r = Run(None, "-L -q")  # type: ignore[arg-type]
    assert (r.code, r.out, r.err) == (255, "", "-q: unknown option\n")
    r = Run(None, "-a -t 1.2.3.4:80 -r 10.0.0.1 -w x")  # type: ignore[arg-type]
    assert (r.code, r.err) == (2, "illegal weight specified\n")
    r = Run(None, "-n")  # type: ignore[arg-type]
    assert (r.code, r.err) == (255, TRYHELP)
    r = Run(None, "-A -f 1 -6x")  # type: ignore[arg-type]
    assert (r.code, r.err) == (255, "-6x: missing argument\n")  # the x of the cluster is -x
    r = Run(None, "-A -t 1.2.3.4:80 -6")  # type: ignore[arg-type]
    assert (r.code, r.err) == (2, "-6 used before -f\n\n")


# ---------------------------------------------------------------------------------------------
# -R


RULES = """\
# saved by hand
ipvsadm -A -t 192.168.0.1:80 -s rr

-a -t 192.168.0.1:80 -r 10.0.0.2:8080 -m\r
\t-a\t-t 192.168.0.1:80   -r 10.0.0.3:8080 -m -w 3
   # indented comment
--set 0 0 100
"""


def test_restore_atomic_sends_one_batch(fake):
    r = Run(fake, "-R --atomic", RULES)
    assert (r.code, r.out, r.err) == (0, "", "")
    assert len(fake.requests) == 1
    batch = fake.requests[0]
    assert batch["op"] == "batch"
    assert [op["op"] for op in batch["ops"]] == ["add-service", "add-dest", "add-dest", "set-timeout"]
    assert fake.timeouts["udp"] == 100
    assert Run(fake, "-Sn").out == (
        "-A -t 192.168.0.1:80 -s rr\n"
        "-a -t 192.168.0.1:80 -r 10.0.0.2:8080 -m -w 1\n"
        "-a -t 192.168.0.1:80 -r 10.0.0.3:8080 -m -w 3\n"
    )


def test_restore_atomic_parse_error_names_the_line_and_sends_nothing(fake):
    rules = "-A -t 1.2.3.4:80\n\n-a -t 1.2.3.4:80 -r 10.0.0.1 -w x\n-A -t 1.2.3.5:80 -z\n"
    r = Run(fake, "-R --atomic", rules)
    assert (r.code, r.err) == (2, "line 3: illegal weight specified\n")
    assert fake.requests == []


def test_restore_atomic_nested_and_listing_lines(fake):
    r = Run(fake, "-R --atomic", "-A -t 1.2.3.4:80\n-R\n")
    assert (r.code, r.err) == (255, "line 2: " + TRYHELP)
    r = Run(fake, "-R --atomic", "-L -n\n")
    assert (r.code, r.err) == (2, "line 1: the 'list' command cannot be used with --restore\n")
    r = Run(fake, "-R --atomic", "-A -t 1.2.3.4:80 --bogus\n")
    assert (r.code, r.err) == (255, "line 1: --bogus: unknown option\n")
    assert fake.requests == []


def test_restore_atomic_is_all_or_nothing(fake):
    ok(fake, "-A -t 1.2.3.9:80")
    rules = "-A -t 1.2.3.4:80\n-a -t 1.2.3.4:80 -r 10.0.0.1\n# dup\n-A -t 1.2.3.9:80\n-A -t 1.2.3.5:80\n"
    r = Run(fake, "-R --atomic", rules)
    assert (r.code, r.err) == (255, "line 4: Service already exists\n")
    assert Run(fake, "-Sn").out == "-A -t 1.2.3.9:80 -s wlc\n"


def test_restore_atomic_empty_input(fake):
    r = Run(fake, "-R --atomic", "# nothing\n\n")
    assert r.code == 0 and fake.requests == [{"op": "batch", "ops": []}]


def test_atomic_is_only_for_restore(fake):
    r = Run(fake, "-L -n --atomic")
    assert (r.code, r.out, r.err) == (2, "", "Illegal '--atomic' option with the 'list' command\n")


# ipvsadm -R (ipvsadm.c restore_table, config_stream_read): each line runs as its own command line.


def saved(fake: FakeLvsd) -> str:
    return Run(fake, "-Sn").out


def test_restore_goes_on_after_kernel_errors_and_exits_with_the_last_lines_status(fake):
    ok(fake, "-A -t 1.2.3.9:80")
    rules = ("-A -t 1.2.3.4:80\n-A -t 1.2.3.9:80\n-a -t 1.2.3.4:80 -r 10.0.0.1 -m\n"
             "-a -t 1.2.3.4:80 -r 10.0.0.1 -m\n-A -t 1.2.3.5:80\n")
    r = Run(fake, "-R", rules)
    assert (r.code, r.out, r.err) == (0, "", "Service already exists\nDestination already exists\n")
    assert saved(fake) == ("-A -t 1.2.3.4:80 -s wlc\n-a -t 1.2.3.4:80 -r 10.0.0.1:80 -m -w 1\n"
                           "-A -t 1.2.3.5:80 -s wlc\n-A -t 1.2.3.9:80 -s wlc\n")
    r = Run(fake, "-R", "-A -t 1.2.3.6:80\n-A -t 1.2.3.5:80\n")  # the last line fails: its status
    assert (r.code, r.out, r.err) == (255, "", "Service already exists\n")
    assert "-A -t 1.2.3.6:80" in saved(fake)


def test_restore_sends_runs_of_lines_as_one_sequence(fake, monkeypatch):
    monkeypatch.setattr(lvsadm, "RESTORE_RUN", 10)
    rules = "".join(f"-A -t 10.0.0.{i}:80\n" for i in range(25))
    r = Run(fake, "-R", rules)
    assert (r.code, r.out, r.err) == (0, "", "")
    assert [len(req["ops"]) for req in fake.requests if req["op"] == "sequence"] == [10, 10, 5]
    assert len(fake.requests) == 3 and len(fake.services) == 25


def test_restore_stops_at_a_parse_error_and_keeps_the_lines_before(fake):
    rules = "-A -t 1.2.3.4:80\n-A -t 1.2.3.4:80\n-a -t 1.2.3.4:80 -r 10.0.0.1 -w x\n-A -t 1.2.3.5:80\n"
    r = Run(fake, "-R", rules)
    assert (r.code, r.out, r.err) == (2, "", "Service already exists\nillegal weight specified\n")
    assert saved(fake) == "-A -t 1.2.3.4:80 -s wlc\n"


def test_restore_comment_lines_are_command_lines_without_a_command(fake):
    # no comment syntax in config_stream_read: '#' is a token, popt finds no option, tryhelp_exit(-1)
    r = Run(fake, "-R", "-A -t 1.2.3.4:80\n# saved by hand\n-A -t 1.2.3.5:80\n")
    assert (r.code, r.out, r.err) == (255, "", TRYHELP)
    assert saved(fake) == "-A -t 1.2.3.4:80 -s wlc\n"
    r = Run(fake, "-R", "-A -t 1.2.3.6:80 # web\n")  # after a command: a leftover argument, fail()
    assert (r.code, r.out, r.err) == (2, "", "unexpected argument #\n")


def test_restore_passes_over_empty_lines(fake):
    # config_stream_read returns argv[0] alone for an empty line; restore_table runs only longer ones
    r = Run(fake, "-R", "\n  \t\n-A -t 1.2.3.4:80\n\n")
    assert (r.code, r.out, r.err) == (0, "", "")
    assert saved(fake) == "-A -t 1.2.3.4:80 -s wlc\n"


def test_restore_goes_on_after_an_unknown_option(fake):
    # popt errors after the command make parse_options return -1: printed, and restore reads on
    r = Run(fake, "-R", "-A -t 1.2.3.4:80 --bogus\n-A -t 1.2.3.5:80\n")
    assert (r.code, r.out, r.err) == (0, "", "--bogus: unknown option\n")
    assert saved(fake) == "-A -t 1.2.3.5:80 -s wlc\n"
    r = Run(fake, "-R", "-A -t 1.2.3.6:80\n-D -t 1.2.3.6:80 -Q\n")
    assert (r.code, r.out, r.err) == (255, "", "-Q: unknown option\n")


def test_restore_lists_in_order_and_refuses_nesting(fake):
    r = Run(fake, "-R", "-A -t 1.2.3.4:80 -s rr\n-L -n\n-A -t 1.2.3.5:80\n-S -n\n")
    assert r.code == 0 and r.err == ""
    assert r.out == ends("""
IP Virtual Server version 1.2.1 (size=4096)|
Prot LocalAddress:Port Scheduler Flags|
  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn|
TCP  1.2.3.4:80 rr|
-A -t 1.2.3.4:80 -s rr|
-A -t 1.2.3.5:80 -s wlc|
""")
    assert [req["op"] for req in fake.requests] == ["sequence", "get-info", "list", "sequence", "list"]
    r = Run(fake, "-R", "-A -t 1.2.3.6:80\n-R\n-A -t 1.2.3.7:80\n")
    assert (r.code, r.out, r.err) == (255, "", TRYHELP)
    assert "1.2.3.6" in saved(fake) and "1.2.3.7" not in saved(fake)


def test_restore_empty_input_sends_nothing(fake):
    r = Run(fake, "-R", "")
    assert (r.code, r.out, r.err, fake.requests) == (0, "", "", [])


FULL_CONFIG = """
-A -t 192.168.0.1:80 -s wlc -p 300 -M 255.255.255.0
-a -t 192.168.0.1:80 -r 10.0.0.3:8080 -m -w 0
-a -t 192.168.0.1:80 -r 10.0.0.2:8080 -m -w 1
-a -t 192.168.0.1:80 -r 10.0.0.4:8080 --fullnat -w 7
-A -u 192.168.0.1:53 -s sh -b sh-fallback,sh-port
-a -u 192.168.0.1:53 -r 10.0.0.2:53
-A -u 10.0.0.1:5060 -s rr -p 360 --pe sip -o
-A -t 10.9.9.9:0 -s lc -p 60
-A -t 10.0.0.1:80 -s wlc -b flag-1,flag-3
-a -t 10.0.0.1:80 -r 10.0.1.1:80 -g -w 0
-a -t 10.0.0.1:80 -r 10.0.1.2:80 -i --tun-type gue --tun-port 7777 --tun-remcsum
-a -t 10.0.0.1:80 -r 10.0.1.3:80 -i --tun-type gre --tun-csum
-a -t 10.0.0.1:80 -r 10.0.1.6 -i --tun-type ipip
-a -t 10.0.0.1:80 -r 2001:db8::77 -i -w 9
-A -t [2001:db8::1]:443 -s mh -b mh-port
-A -t [2001:db8::1]:8443 -s rr -p 10 -M 64
-a -t [2001:db8::1]:8443 -r [2001:db8::2]:8443 -m
-A -f 1 -s rr
-a -f 1 -r 10.0.0.4 -i -w 2
-A -f 2 -6 -s rr -p -M 64
-a -f 2 -6 -r [2001:db8::9]:0 -m -w 3
-A -f 4294967295 -s wrr
-A --sctp-service 10.0.0.1:9 -s rr
"""


def test_save_restore_round_trip(fake):
    setup = Run(fake, "-R", FULL_CONFIG)
    assert setup.code == 0, setup.err
    saved = Run(fake, "-Sn")
    assert saved.code == 0 and saved.err == ""
    assert saved.out.count("\n") == len(FULL_CONFIG.strip().splitlines())

    again = FakeLvsd()
    assert Run(again, "-R", saved.out).code == 0
    assert Run(again, "-Sn").out == saved.out
    # and the state itself survived, not just the text
    for listing in ("-Ln", "-Ln --tun-info", "-Ln --persistent-conn"):
        assert Run(again, listing).out == Run(fake, listing).out


def test_save_with_ipvsadm_prefix_restores(fake):
    ok(fake, "-A -t 1.2.3.4:80")
    ok(fake, "-a -t 1.2.3.4:80 -r 10.0.0.1 -m")
    saved = Run(fake, "-Sn").out
    prefixed = "".join("ipvsadm " + line + "\n" for line in saved.splitlines())
    again = FakeLvsd()
    assert Run(again, "-R", prefixed).code == 0
    assert Run(again, "-Sn").out == saved


# ---------------------------------------------------------------------------------------------
# the control socket


@pytest.fixture
def short_dir():
    path = tempfile.mkdtemp(prefix="lvsadm-", dir="/tmp")  # AF_UNIX paths are short
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_connection_failure_exits_2(short_dir, capsys, monkeypatch):
    missing = os.path.join(short_dir, "none.sock")
    assert lvsadm.main(["--control", missing, "-Ln"]) == 2
    assert capsys.readouterr().err == (
        "Can't initialize ipvs: Protocol not available\nAre you sure that lvsd is running?\n")
    monkeypatch.setenv(control_client.ENV_VAR, missing)
    assert lvsadm.main(["-C"]) == 2


def test_control_option_forms():
    assert lvsadm.split_control(["--control", "/x", "-Ln"]) == (["-Ln"], "/x")
    assert lvsadm.split_control(["-L", "--control=/y"]) == (["-L"], "/y")
    assert lvsadm.split_control(["-L", "--", "--control"]) == (["-L", "--", "--control"], None)
    assert control_client.socket_path(None) in (os.environ.get(control_client.ENV_VAR),
                                                control_client.DEFAULT_PATH)


def test_missing_control_argument(capsys):
    assert lvsadm.main(["-L", "--control"]) == 255
    assert capsys.readouterr().err == "--control: missing argument\n"


def test_over_a_real_socket(short_dir, capsys):
    path = os.path.join(short_dir, "lvsd.sock")
    fake = FakeLvsd()
    thread = fake.serve(path)
    try:
        assert lvsadm.main(["--control", path, "-A", "-t", "1.2.3.4:80", "-s", "rr"]) == 0
        assert lvsadm.main(["--control", path, "-a", "-t", "1.2.3.4:80", "-r", "10.0.0.1:8080", "-m"]) == 0
        capsys.readouterr()
        assert lvsadm.main(["--control", path, "-Ln"]) == 0
        assert capsys.readouterr().out == ends("""
IP Virtual Server version 1.2.1 (size=4096)|
Prot LocalAddress:Port Scheduler Flags|
  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn|
TCP  1.2.3.4:80 rr|
  -> 10.0.0.1:8080                Masq    1      0          0         |
""")
        with control_client.Client(path) as conn:
            assert conn.request({"op": "get-timeout"}) == {"ok": True, "result": {"tcp": 900, "tcpfin": 120,
                                                                                  "udp": 300}}
            assert conn.request({"op": "nope"})["errno"] == "EINVAL"
        assert control_client.request({"op": "get-info"}, path)["result"]["services"] == 1
    finally:
        os.unlink(path)
        thread.join(timeout=2)


def test_daemon_hanging_up_is_an_error(short_dir, capsys):
    import socket
    import threading

    path = os.path.join(short_dir, "mute.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(1)

    def hang_up() -> None:
        conn, _ = listener.accept()
        conn.recv(4096)
        conn.close()

    thread = threading.Thread(target=hang_up, daemon=True)
    thread.start()
    try:
        assert lvsadm.main(["--control", path, "-C"]) == 1
        assert capsys.readouterr().err == "lvsd closed the control connection\n"
    finally:
        thread.join(timeout=2)
        listener.close()


@pytest.mark.parametrize(("err", "reason"), [
    (errno.ENOENT, "Protocol not available"),
    (errno.ECONNREFUSED, "Protocol not available"),
    (errno.EACCES, "Permission denied (you must be root)"),
    (errno.EPERM, "Permission denied (you must be root)"),
    (errno.EMFILE, os.strerror(errno.EMFILE)),
])
def test_connect_failure_reasons(err, reason):
    assert control_client.ConnectFailed("/x", OSError(err, os.strerror(err))).reason == reason


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores socket permissions")
def test_permission_denied_reason(short_dir):
    path = os.path.join(short_dir, "root.sock")
    fake = FakeLvsd()
    thread = fake.serve(path)
    try:
        time.sleep(0.05)
        os.chmod(path, 0)
        with pytest.raises(control_client.ConnectFailed) as info:
            control_client.Client(path)
        assert info.value.reason == "Permission denied (you must be root)"
    finally:
        os.unlink(path)
        thread.join(timeout=2)


# ---------------------------------------------------------------------------------------------
# what ipvsadm 1.31 on the kernel's IPVS answers (issue 12)


def test_pe_sip_is_kept_and_listed_and_a_bogus_pe_is_refused(fake):
    ok(fake, "-A -u 10.0.0.1:5060 -s rr -p 360 --pe sip")
    ok(fake, "-A -u 10.0.0.1:5061 -s rr --pe sip")  # print_service_entry shows `pe` only when persistent
    assert Run(fake, "-Ln").out.split("\n")[3:] == ["UDP  10.0.0.1:5060 rr persistent 360 pe sip",
                                                    "UDP  10.0.0.1:5061 rr", ""]
    assert saved(fake) == "-A -u 10.0.0.1:5060 -s rr -p 360 --pe sip\n-A -u 10.0.0.1:5061 -s rr --pe sip\n"
    r = Run(fake, "-A -u 10.0.0.1:5062 --pe bogus")
    assert (r.code, r.out, r.err) == (255, "", "Scheduler or persistence engine not found\n")


def test_weights_above_65535(fake):
    ok(fake, "-A -t 1.2.3.4:80")
    ok(fake, "-a -t 1.2.3.4:80 -r 10.0.0.1 -m -w 70000")
    ok(fake, "-a -t 1.2.3.4:80 -r 10.0.0.2 -m -w 2147483647")
    assert Run(fake, "-Ln").out.split("\n")[4:] == [
        "  -> 10.0.0.1:80                  Masq    70000  0          0         ",
        "  -> 10.0.0.2:80                  Masq    2147483647 0          0         ", ""]
    r = Run(fake, "-a -t 1.2.3.4:80 -r 10.0.0.3 -w 2147483648")
    assert (r.code, r.out, r.err) == (2, "", "illegal weight specified\n")


def test_localhost_as_real_server(fake, monkeypatch):
    monkeypatch.setattr(ipvsadm_args, "_host_to_addr", lambda name: "127.0.0.1" if name == "localhost" else None)
    ok(fake, "-A -t 1.2.3.4:80")
    ok(fake, "-a -t 1.2.3.4:80 -r localhost")
    assert saved(fake) == "-A -t 1.2.3.4:80 -s wlc\n-a -t 1.2.3.4:80 -r 127.0.0.1:80 -g -w 1\n"


def test_fwmark_real_server_ports_stay_numbers_without_n(fake, monkeypatch):
    monkeypatch.setattr(ipvsadm_format, "_host_name", lambda addr, family: addr)
    ok(fake, "-A -f 1 -s rr")
    ok(fake, "-a -f 1 -r 10.0.0.4:80 -m")
    ok(fake, "-A -t 1.2.3.4:80 -s rr")
    ok(fake, "-a -t 1.2.3.4:80 -r 10.0.0.5:80 -m")
    assert Run(fake, "-L").out.split("\n")[3:] == [
        "TCP  1.2.3.4:http rr",
        "  -> 10.0.0.5:http                Masq    1      0          0         ",
        "FWM  1 rr",
        "  -> 10.0.0.4:80                  Masq    1      0          0         ", ""]
    assert Run(fake, "-S").out == ("-A -t 1.2.3.4:http -s rr\n-a -t 1.2.3.4:http -r 10.0.0.5:http -m -w 1\n"
                                   "-A -f 1 -s rr\n-a -f 1 -r 10.0.0.4:80 -m -w 1\n")
    assert Run(fake, "-L -f 1").out.split("\n")[2:] == [
        "FWM  1 rr", "  -> 10.0.0.4:80                  Masq    1      0          0         ", ""]


def test_try_names_the_program_as_typed(monkeypatch):
    monkeypatch.setenv("PATH", "/usr/sbin:/usr/bin")
    monkeypatch.setattr(lvsadm.shutil, "which", lambda name: "/usr/sbin/lvsadm" if name == "lvsadm" else None)
    assert lvsadm.program_name("/usr/sbin/lvsadm") == "lvsadm"  # found on PATH: typed as its name
    assert lvsadm.program_name("./lvsadm") == "./lvsadm"
    assert lvsadm.program_name("/opt/pylvs/bin/lvsadm") == "/opt/pylvs/bin/lvsadm"  # not the one on PATH
    assert lvsadm.program_name(lvsadm.__file__) == "lvsadm"  # python -m pylvs.cli.lvsadm
