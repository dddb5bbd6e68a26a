"""`lvsadm --vrrp [--json]`: the director's VRRP instances, from lvsd's `vrrp` control op."""

from __future__ import annotations

import io
import json

from pylvs.cli import lvsadm
from pylvs.vrrp.state import Instance, InstanceConfig


class Answer:
    def __init__(self, answer: dict) -> None:
        self.answer = answer
        self.requests: list[dict] = []

    def request(self, obj: dict) -> dict:
        self.requests.append(obj)
        return self.answer


def run(transport: Answer, *argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = lvsadm.run(list(argv), transport=transport, stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def instances() -> dict:
    master = Instance(InstanceConfig("VI_1", 51, priority=150, version=3, advert_int=0.5,
                                     addresses=("203.0.113.100",), primary_ip="203.0.113.2"))
    master.start(0.0)
    master.expire(5.0)
    backup = Instance(InstanceConfig("VI_2", 52, priority=100, addresses=("192.0.2.1",), primary_ip="192.0.2.2"))
    backup.start(0.0)
    backup.track_delta = -20
    rows = []
    for inst, ifname in ((master, "vip0"), (backup, "dip0")):
        rows.append({**inst.describe(5.0), "interface": ifname, "sync_group": None})
    return json.loads(json.dumps({"instances": rows}))


def test_vrrp_text_and_json():
    transport = Answer({"ok": True, "result": instances()})
    code, out, _ = run(transport, "--vrrp")
    assert code == 0 and transport.requests == [{"op": "vrrp"}]
    assert out.splitlines() == [
        "Instance State  VRID Ver Prio    Interface Master      Addresses",
        "VI_1     MASTER 51   v3  150     vip0      203.0.113.2 203.0.113.100",
        "VI_2     BACKUP 52   v2  80(100) dip0      -           192.0.2.1",
    ]
    code, out, _ = run(transport, "--vrrp", "--json")
    assert code == 0 and json.loads(out) == instances()


def test_an_lvsd_without_vrrp_says_so():
    transport = Answer({"ok": False, "errno": "EOPNOTSUPP",
                        "error": "lvsd runs no VRRP instance (--keepalived with vrrp_instance blocks)"})
    code, out, err = run(transport, "--vrrp")
    assert code == 255 and out == "" and "no VRRP instance" in err
