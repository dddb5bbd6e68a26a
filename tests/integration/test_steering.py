"""The steering table against a real nftables in a namespace of its own: `present()` notices an
`nft flush ruleset` (or a flushed chain) and `restore(engine)` puts the table back as it was."""

from __future__ import annotations

import json
import sys

from pylvs.lab.netns import Netns

PROBE = r"""
import json, subprocess
from pylvs.control import api
from pylvs.engine.engine import Engine
from pylvs.engine.hops import StaticRoutes
from pylvs.io import steering

engine = Engine(StaticRoutes())
answer = api.handle(engine, {"op": "add-service", "service": {"protocol": "tcp", "addr": "203.0.113.10",
                                                              "port": 80, "scheduler": "rr"}})
assert answer["ok"], answer
steering.install()
steering.update(engine)
out = {"installed": steering.present()}
subprocess.run(["nft", "flush", "ruleset"], check=True)
out["after_flush_ruleset"] = steering.present()
steering.restore(engine)
out["restored"] = steering.present()
out["vips"] = subprocess.run(["nft", "list", "set", "inet", "pylvs", "vips"], capture_output=True,
                             text=True).stdout
subprocess.run(["nft", "flush", "chain", "inet", "pylvs", "prerouting"], check=True)
out["after_flush_chain"] = steering.present()
steering.remove()
out["after_remove"] = steering.present()
print(json.dumps(out))
"""


def test_flushed_steering_is_noticed_and_restored():
    net = Netns()
    try:
        net.add("steer")
        report = json.loads(net.exec("steer", sys.executable, "-c", PROBE, timeout=30).stdout)
    finally:
        net.teardown()
    assert report["installed"] is True
    assert report["after_flush_ruleset"] is False
    assert report["restored"] is True and "203.0.113.10" in report["vips"]
    assert report["after_flush_chain"] is False
    assert report["after_remove"] is False
