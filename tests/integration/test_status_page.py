"""lvsd --web in headless Chromium during traffic, with keepalived health checks: the page lists the
services and real servers with their method, weight and health, a failed real server shows as down, and
the numbers move between two reads. The screenshot is kept in build/artifacts/status-page.png."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys

import pytest
from prometheus_client.parser import text_string_to_metric_families

from pylvs.lab.netns import wait_for
from pylvs.lab.topology import VIP, NatLab

WEB = "127.0.0.1:8081"  # the director namespace's loopback; the browser runs in that namespace
ARTIFACTS = os.path.join(os.path.dirname(__file__), "..", "..", "build", "artifacts")
CHECK = "connect_timeout 1\n            retry 0"
CONF = """
virtual_server {vip} 80 {{
    delay_loop 1
    lb_algo rr
    lb_kind NAT
    protocol TCP
{real_servers}
}}
virtual_server {vip} 53 {{
    lb_algo wrr
    lb_kind NAT
    protocol UDP
    real_server 192.0.2.11 5353 {{
        weight 2
    }}
    real_server 192.0.2.12 5353 {{
    }}
}}
"""
RS = """    real_server {addr} 8080 {{
        TCP_CHECK {{
            {check}
        }}
    }}"""


def dests(lab) -> list[str]:
    return re.findall(r"-> (\d+\.\d+\.\d+\.\d+:\d+)", lab.lvsadm("-L", "-n", "-t", f"{VIP}:80").stdout)


@pytest.fixture(scope="module")
def lab():
    lab = NatLab(n_rs=3)
    try:
        lab.up()
        conf = os.path.join(lab.net.tmp, "keepalived.conf")
        with open(conf, "w") as f:
            f.write(CONF.format(vip=VIP, real_servers="\n".join(RS.format(addr=a, check=CHECK) for a in lab.rips)))
        lab.start_lvsd("--keepalived", conf, "--web", WEB)
        wait_for(lambda: len(dests(lab)) == 3, what="the keepalived table")
        lab.stop_http("rs2")  # its TCP_CHECK fails: keepalived's rules take it out of the pool
        wait_for(lambda: "192.0.2.12:8080" not in dests(lab), what="rs2 to be removed")
        yield lab
    finally:
        lab.down()
        assert lab.net.leftovers() == []


def browse(lab) -> dict:
    os.makedirs(ARTIFACTS, exist_ok=True)
    shot = os.path.join(lab.net.tmp, "status-page.png")
    r = lab.net.exec("director", sys.executable, "-m", "tests.integration.browser_probe", f"http://{WEB}/", shot,
                     timeout=90)
    shutil.copy(shot, os.path.join(ARTIFACTS, "status-page.png"))
    return json.loads(r.stdout)


def test_the_page_shows_the_table_health_and_moving_numbers_during_traffic(lab):
    traffic = subprocess.Popen(["ip", "netns", "exec", lab.net.name("client"), "wrk", "-t1", "-c4", "-d60s",
                                "-H", "Connection: close", f"http://{VIP}/"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        seen = browse(lab)
    finally:
        traffic.kill()  # ends before its 60 s; the browser's start alone takes seconds
        traffic.wait()
    first, second = seen["reads"]
    assert seen["console"] == []
    assert first["live"].startswith("live")
    services = {s["service"]: s for s in second["services"]}
    assert list(services) == [f"TCP {VIP}:80", f"UDP {VIP}:53"]
    tcp = services[f"TCP {VIP}:80"]
    assert tcp["headers"][:6] == ["Real server", "Forward", "Weight", "Health", "Last check", "Active"]
    rows = {row["dest"]: row for row in tcp["rows"]}
    assert sorted(rows) == [f"{addr}:8080" for addr in lab.rips]
    for addr in ("192.0.2.11", "192.0.2.13"):
        cells = rows[f"{addr}:8080"]["cells"]
        assert cells[1:5] == ["Masq", "1", "up", "TCP_CHECK ok"], cells
    down = rows["192.0.2.12:8080"]
    assert "removed" in down["cls"] and down["cells"][3] == "down"
    assert "removed from the pool" in down["cells"][-1]
    udp = {row["dest"]: row["cells"] for row in services[f"UDP {VIP}:53"]["rows"]}
    assert udp["192.0.2.11:5353"][1:5] == ["Masq", "2", "up", "no checker"]  # keepalived: alive without checkers
    # the numbers move: new connections keep arriving on both live servers
    assert int(second["total_conns"]) > int(first["total_conns"]) > 0
    before = {row["dest"]: row["cells"] for row in first["services"][0]["rows"]}
    after = {row["dest"]: row["cells"] for row in tcp["rows"]}
    assert before["192.0.2.11:8080"] != after["192.0.2.11:8080"]
    assert second["kpis"]["cps"] != "0/s"
    assert "health checks" not in " ".join(second["pills"]) and "1 real server down" in second["pills"]
    with open(os.path.join(ARTIFACTS, "status-page.png"), "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_health_metrics_follow_the_checks(lab):
    samples = {(s.name, s.labels["remote_address"], s.labels["remote_port"]): s.value
               for fam in text_string_to_metric_families(lab.lvsadm("--metrics").stdout) for s in fam.samples
               if s.name.startswith("pylvs_health")}
    assert samples[("pylvs_health_up", "192.0.2.12", "8080")] == 0
    assert samples[("pylvs_health_transitions_total", "192.0.2.12", "8080")] == 1
    assert samples[("pylvs_health_up", "192.0.2.11", "8080")] == 1
    assert samples[("pylvs_health_transitions_total", "192.0.2.11", "8080")] == 0
    assert samples[("pylvs_health_up", "192.0.2.12", "5353")] == 1  # the UDP service's, without checkers
