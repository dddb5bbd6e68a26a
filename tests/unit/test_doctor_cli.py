"""lvsadm --doctor against a fake lvsd: which real servers it examines, selection, output and exit codes
(the probing itself is replaced by fixed observations here; tests/integration/test_doctor.py probes)."""

from __future__ import annotations

import io
import json
import shlex

import pytest

from pylvs.cli import lvsadm
from pylvs.doctor import run
from pylvs.doctor.model import Observation, Reply, Target
from pylvs.ipvsadm import args as ipvsadm_args
from tests.unit.fake_lvsd import FakeLvsd

TABLE = """
-A -t 192.0.2.100:80 -s rr
-a -t 192.0.2.100:80 -r 192.0.2.11 -g
-a -t 192.0.2.100:80 -r 198.51.100.12 -i --tun-type gue --tun-port 6080
-a -t 192.0.2.100:80 -r 10.0.0.2:8080 -m
-A -u 192.0.2.100:53 -s rr
-a -u 192.0.2.100:53 -r 192.0.2.11 -g
-A -f 7 -s rr
-a -f 7 -r 192.0.2.13 -g
"""


@pytest.fixture(autouse=True)
def no_dns(monkeypatch):
    monkeypatch.setattr(ipvsadm_args, "_host_to_addr", lambda name: None)


@pytest.fixture
def fake() -> FakeLvsd:
    fake = FakeLvsd()
    for line in TABLE.strip().splitlines():
        assert lvsadm.run(shlex.split(line), transport=fake, stdout=io.StringIO(), stderr=io.StringIO()) == 0
    return fake


def healthy(t: Target) -> Observation:
    onlink = t.method == "dr"
    return Observation(source="192.0.2.1", onlink=onlink, next_hop=t.rip, next_hop_mac="02:00:00:00:00:11",
                       rs_mac="02:00:00:00:00:11" if onlink else None, method=Reply("synack", t.vip, mss=1400),
                       rip=Reply("synack", t.rip), big=Reply("synack", t.vip), egress_mtu=1500, client_mtu=1500)


@pytest.fixture
def probed(monkeypatch):
    """Replace the prober: every target looks healthy unless listed in `broken` (then the VIP is silent)."""
    seen: list[list[Target]] = []
    broken: set[str] = set()

    def observe(targets: list[Target]) -> list[Observation]:
        seen.append(list(targets))
        out = []
        for t in targets:
            o = healthy(t)
            if t.rip in broken:
                o.method = Reply("none")
            out.append(o)
        return out

    monkeypatch.setattr(run, "probe_all", lambda found, timeout=None: run.examine(found, observe))
    return seen, broken


def doctor(fake: FakeLvsd, line: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = lvsadm.run(shlex.split(line), transport=fake, stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def test_targets_are_the_dr_and_tun_real_servers_with_their_ports():
    services = [
        {"protocol": "tcp", "addr": "192.0.2.100", "port": 80, "dests": [
            {"addr": "192.0.2.11", "port": 80, "method": "route"},
            {"addr": "198.51.100.12", "port": 80, "method": "tunnel", "tun_type": "gre", "tun_port": 0},
            {"addr": "10.0.0.2", "port": 8080, "method": "masq"}]},
        {"protocol": "udp", "addr": "192.0.2.100", "port": 53, "dests": [{"addr": "192.0.2.11", "port": 53,
                                                                         "method": "route"}]},
        {"fwmark": 7, "port": 0, "dests": [{"addr": "192.0.2.13", "port": 0, "method": "route"}]},
    ]
    found = run.targets(services)
    assert [(t.service, t.rip, t.method, t.port, t.tcp_service, t.tun_type) for t in found] == [
        ("TCP 192.0.2.100:80", "192.0.2.11", "dr", 80, True, "ipip"),
        ("TCP 192.0.2.100:80", "198.51.100.12", "tun", 80, True, "gre"),
        ("UDP 192.0.2.100:53", "192.0.2.11", "dr", 53, False, "ipip"),
        ("FWM 7", "192.0.2.13", "dr", run.ANY_PORT, False, "ipip"),
    ]
    assert found[3].vip == ""  # a fwmark service names no VIP: the prober says it cannot tell


def test_doctor_examines_every_dr_and_tun_real_server_and_says_what_it_could_not_probe(fake, probed):
    seen, _ = probed
    code, out, err = doctor(fake, "--doctor")
    assert [t.rip for t in seen[0]] == ["198.51.100.12", "192.0.2.11", "192.0.2.11"]  # newest first, as listed
    assert "FWM 7 -> 192.0.2.13 (DR)\n  ?        reachable     could not tell: a fwmark service" in out
    assert code == 1 and err == ""  # a check that could not tell is not "all fine"


def test_one_service_is_chosen_as_ipvsadm_names_it(fake, probed):
    seen, broken = probed
    code, out, _ = doctor(fake, "--doctor -t 192.0.2.100:80")
    assert code == 0, out
    assert [t.rip for t in seen[-1]] == ["198.51.100.12", "192.0.2.11"]
    assert out.endswith("All 2 real server(s) look fine.\n")
    broken.add("192.0.2.11")
    code, out, _ = doctor(fake, "--doctor -t 192.0.2.100:80")
    assert code == 1 and "PROBLEM  vip" in out


def test_json_output(fake, probed):
    code, out, _ = doctor(fake, "--doctor -u 192.0.2.100:53 --json")
    data = json.loads(out)
    assert code == 0 and data["clean"] is True
    [rs] = data["real_servers"]
    assert (rs["service"], rs["real_server"], rs["method"]) == ("UDP 192.0.2.100:53", "192.0.2.11", "dr")
    assert {c["check"]: c["status"] for c in rs["checks"]}["listening"] == "n/a"


def test_selection_errors_are_ipvsadm_s(fake, probed):
    assert doctor(fake, "--doctor -t 192.0.2.100:81") == (1, "", "No such service\n")
    code, _, err = doctor(fake, "--doctor -t nonsense")
    assert (code, err) == (2, "illegal virtual server address[:port] specified\n")
    assert doctor(fake, "--doctor -n")[0] == 2
