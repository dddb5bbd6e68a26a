"""lvsd driven by keepalived.conf: health checks change the table live, SIGHUP reloads it."""

from __future__ import annotations

import hashlib
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from pylvs.lab.netns import wait_for
from pylvs.lab.topology import VIP, NatLab

CHECK = "connect_timeout 1\n            retry 1\n            delay_before_retry 1"
CONF = """
global_defs {{
    router_id PYLVS_LAB
}}
virtual_server {vip} 80 {{
    delay_loop 1
    lb_algo rr
    lb_kind NAT
    protocol TCP
    sorry_server 192.0.2.13 8080
{real_servers}
}}
virtual_server {vip} 81 {{
    delay_loop 1
    lb_algo rr
    lb_kind NAT
    protocol TCP
    real_server 192.0.2.11 8080 {{
        TCP_CHECK {{
            {check}
        }}
    }}
}}
"""
RS_TCP = """    real_server {addr} 8080 {{
        weight 1
        TCP_CHECK {{
            {check}
        }}
    }}"""
RS_HTTP_INHIBIT = """    real_server {addr} 8080 {{
        weight 2
        inhibit_on_failure
        HTTP_GET {{
            url {{
                path /
                status_code 200
            }}
            {check}
        }}
    }}"""


def conf(real_servers: list[str]) -> str:
    return CONF.format(vip=VIP, real_servers="\n".join(real_servers), check=CHECK)


def table(lab) -> dict[str, str]:
    """Real servers of VIP:80 -> weight."""
    out = lab.lvsadm("-L", "-n", "-t", f"{VIP}:80").stdout
    return dict(re.findall(r"-> (192\.0\.2\.\d+):8080 +Masq +(\d+)", out))


@pytest.fixture(scope="module")
def ka_lab():
    lab = NatLab(n_rs=3).up(udp=False)
    try:
        lab.conf = os.path.join(lab.net.tmp, "keepalived.conf")
        with open(lab.conf, "w") as f:
            f.write(conf([RS_TCP.format(addr="192.0.2.11", check=CHECK),
                          RS_HTTP_INHIBIT.format(addr="192.0.2.12", check=CHECK)]))
        lab.start_lvsd("--keepalived", lab.conf)
        wait_for(lambda: table(lab) == {"192.0.2.11": "1", "192.0.2.12": "2"}, timeout=10, what="startup table")
        yield lab
    finally:
        lab.down()


def wrk(lab, seconds: int) -> str:
    return lab.net.exec("client", "wrk", "-t1", "-c6", f"-d{seconds}s", f"http://{VIP}/", timeout=seconds + 20).stdout


def test_a_failed_server_leaves_within_the_check_period_and_comes_back(ka_lab):
    lab = ka_lab
    load = subprocess.Popen(["ip", "netns", "exec", lab.net.name("client"), "wrk", "-t1", "-c6", "-d8s",
                             f"http://{VIP}/"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(1)
        lab.stop_http("rs1")
        t0 = time.monotonic()
        wait_for(lambda: "192.0.2.11" not in table(lab), timeout=10, interval=0.1, what="rs1 removal")
        # delay_loop x (retry + 1) + connect_timeout = 3 s, plus a check already in flight
        assert time.monotonic() - t0 <= 1 * (1 + 1) + 1 + 1.5
    finally:
        load.wait(30)
    out = wrk(lab, 2)
    assert "Socket errors" not in out and "Non-2xx" not in out, out
    lab.start_http("rs1")
    wait_for(lambda: "192.0.2.11" in table(lab), timeout=10, what="rs1 back")


def test_inhibit_on_failure_keeps_the_server_with_weight_zero(ka_lab):
    lab = ka_lab
    lab.stop_http("rs2")
    try:
        wait_for(lambda: table(lab).get("192.0.2.12") == "0", timeout=10, what="rs2 weight 0")
        assert lab.curl(f"http://{VIP}/").stdout.strip() == "rs1"
    finally:
        lab.start_http("rs2")
    wait_for(lambda: table(lab).get("192.0.2.12") == "2", timeout=10, what="rs2 weight back")


def test_sorry_server_answers_when_every_real_server_is_down(ka_lab):
    lab = ka_lab
    lab.stop_http("rs1")
    lab.stop_http("rs2")
    try:
        wait_for(lambda: "192.0.2.13" in table(lab), timeout=12, what="sorry server")
        assert lab.curl(f"http://{VIP}/").stdout.strip() == "rs3"
    finally:
        lab.start_http("rs1")
        lab.start_http("rs2")
    wait_for(lambda: table(lab) == {"192.0.2.11": "1", "192.0.2.12": "2"}, timeout=12, what="real servers back")


def test_reload_changes_only_what_changed_and_keeps_a_running_download(ka_lab):
    lab = ka_lab
    with open(os.path.join(lab.net.tmp, "big.bin"), "rb") as f:
        expected = hashlib.sha256(f.read()).hexdigest()
    before = lab.lvsadm("-L", "-n", "-c").stdout
    download = subprocess.Popen(
        ["ip", "netns", "exec", lab.net.name("client"), "sh", "-c",
         f"curl -sS --max-time 40 --limit-rate 8M http://{VIP}/big | sha256sum"],
        stdout=subprocess.PIPE, text=True, start_new_session=True)
    # the download's real server: the one connection to VIP:80 that is new and established
    def serving() -> str | None:
        now = set(lab.lvsadm("-L", "-n", "-c").stdout.splitlines()) - set(before.splitlines())
        found = [m.group(1) for line in now
                 if (m := re.search(rf"ESTABLISHED .* {VIP}:80 +(192\.0\.2\.1[12]):8080", line))]
        return found[0] if len(found) == 1 else None
    wait_for(lambda: serving() is not None, timeout=5, what="the download's connection")
    keep = serving()
    os.killpg(download.pid, signal.SIGSTOP)  # held over the reload, however fast this machine downloads
    try:
        other = "192.0.2.12" if keep == "192.0.2.11" else "192.0.2.11"
        kept = RS_TCP if keep == "192.0.2.11" else RS_HTTP_INHIBIT
        with open(lab.conf, "w") as f:  # the other real server removed, rs3 added, the serving one unchanged
            f.write(conf([kept.format(addr=keep, check=CHECK), RS_TCP.format(addr="192.0.2.13", check=CHECK)]))
        lab.lvsadm("--reload")
        wait_for(lambda: set(table(lab)) == {keep, "192.0.2.13"}, timeout=10, what="reloaded table")
        assert other not in table(lab)
        assert download.poll() is None, "the download should still be running during the reload"
        os.killpg(download.pid, signal.SIGCONT)
        out, _ = download.communicate(timeout=60)
    finally:
        if download.poll() is None:
            os.killpg(download.pid, signal.SIGKILL)
    assert out.split()[0] == expected


def test_a_broken_reload_keeps_the_running_table(ka_lab):
    lab = ka_lab
    before = table(lab)
    with open(lab.conf) as f:
        good = f.read()
    try:
        with open(lab.conf, "w") as f:
            # a keyword missing its parameter is fatal (an unbalanced brace is not, in keepalived)
            f.write(good + "\nvirtual_server 203.0.113.100 82 {\n  real_server 192.0.2.11 80 {\n    weight\n"
                           "  }\n}\n")
        refused = lab.lvsadm("--reload", check=False)  # lvsadm tests the file first (lvsd -t) and refuses it
        assert refused.returncode == 4 and "not reloaded" in refused.stderr, refused.stderr
        os.kill(lab.lvsd.pid, signal.SIGHUP)  # lvsd itself refuses it too
        wait_for(lambda: "Reload failed" in lab.lvsd_log(), timeout=5, what="the refused reload")
        assert table(lab) == before
    finally:
        with open(lab.conf, "w") as f:
            f.write(good)


def test_a_broken_config_at_start_exits_as_keepalived_does():
    lab = NatLab(n_rs=1).up(http=False, udp=False)
    try:
        path = os.path.join(lab.net.tmp, "bad.conf")
        with open(path, "w") as f:
            f.write("virtual_server 203.0.113.100 80 {\n  lb_algo\n}\n")
        r = subprocess.run(["ip", "netns", "exec", lab.net.name("director"), sys.executable, "-m", "pylvs.cli.lvsd",
                            "-i", "vip0", "--control", lab.control, "--keepalived", path],
                           capture_output=True, text=True, timeout=30)
        assert r.returncode == 4 and "bad.conf" in r.stderr, (r.returncode, r.stderr)
    finally:
        lab.down()
