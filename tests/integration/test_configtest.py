"""`lvsd -t` against the real keepalived and a real lvsd: the recorded keepalived answers are current,
the test runs as an unprivileged user, and the table it prints is the one lvsd then holds."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from pylvs.lab.topology import VIP, NatLab
from tests.data.configtest import record


def as_set(answer: dict) -> dict:
    # keepalived's processes write to the same stderr at once: the order of their lines varies
    return {"exit": answer["exit"], "messages": sorted(answer["messages"])}


def test_the_recorded_answers_are_what_keepalived_says_today():
    with open(record.RECORD) as f:
        recorded = json.load(f)
    today = record.record()
    assert today["keepalived"] == recorded["keepalived"]
    assert {n: as_set(a) for n, a in today["files"].items()} == {n: as_set(a) for n, a in recorded["files"].items()}


def test_the_config_test_needs_no_capability_and_no_network():
    """No capability at all (bounding set empty) and a network namespace with nothing in it."""
    data = os.path.dirname(record.RECORD)
    jail = ["unshare", "--net", "setpriv", "--bounding-set=-all", "--inh-caps=-all", "--ambient-caps=-all",
            sys.executable, "-m", "pylvs.cli.lvsd", "-t", "--keepalived"]
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    ok = subprocess.run([*jail, "good_dr_tun.conf"], cwd=data, env=env, capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.startswith("-A -t 203.0.113.100:80 -s wlc -p 300\n")
    bad = subprocess.run([*jail, "error_bad_weight.conf"], cwd=data, env=env, capture_output=True, text=True,
                         timeout=60)
    assert bad.returncode == 5
    assert "(error_bad_weight.conf: Line 6) Real server weight 99999999999 is outside range 0-2147483647" \
        in bad.stderr


# NAT, DR, TUN, persistence, thresholds and a fwmark service; no checkers, so nothing changes after start
KEEPALIVED = f"""virtual_server {VIP} 80 {{
    lb_algo wlc
    lb_kind NAT
    protocol TCP
    persistence_timeout 120
    real_server 192.0.2.11 8080 {{
        weight 3
        uthreshold 100
        lthreshold 10
    }}
    real_server 192.0.2.12 80 {{
        weight 1
        lvs_method DR
    }}
}}
virtual_server {VIP} 53 {{
    lb_algo sh
    lb_kind TUN type gre
    protocol UDP
    real_server 192.0.2.12 53 {{
        weight 2
    }}
}}
virtual_server fwmark 3 {{
    lb_algo rr
    lb_kind DR
    real_server 192.0.2.11 0 {{
        weight 1
    }}
}}
"""


def lvsd_t(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pylvs.cli.lvsd", "-t", *args], capture_output=True, text=True,
                          timeout=60)


def test_the_printed_table_is_the_one_lvsd_builds():
    lab = NatLab(n_rs=2).up(http=False, udp=False)
    try:
        conf = os.path.join(lab.net.tmp, "keepalived.conf")
        with open(conf, "w") as f:
            f.write(KEEPALIVED)
        predicted = lvsd_t("--keepalived", conf)
        assert predicted.returncode == 0 and predicted.stdout.count("\n") == 7, predicted.stderr
        lab.start_lvsd("--keepalived", conf)
        assert lab.lvsadm("-S", "-n").stdout == predicted.stdout
        lab.stop_lvsd()

        rules = os.path.join(lab.net.tmp, "ipvsadm.rules")
        with open(rules, "w") as f:
            f.write(predicted.stdout + f"-A -u {VIP}:5353 -s rr -o\n-a -u {VIP}:5353 -r 192.0.2.11:5353 -m -x 5 -y 2\n")
        predicted = lvsd_t("--config", rules)
        assert predicted.returncode == 0, predicted.stderr
        lab.start_lvsd("--config", rules)
        assert lab.lvsadm("-S", "-n").stdout == predicted.stdout
    finally:
        lab.down()
