"""KernelRoutes against a real kernel in a namespace of its own: the table is copied by prefix, a
route added later is followed, and an unknown neighbour is resolved by the kernel on request."""

from __future__ import annotations

import json
import sys

from pylvs.lab.netns import Netns

PROBE = r"""
import json, select, socket, subprocess, sys, time
from pylvs.engine.engine import Interface
from pylvs.io.kernel import KernelRoutes

def ip(*args):
    subprocess.run(["ip", *args], check=True)

index = socket.if_nametoindex("d0")
routes = KernelRoutes({index: Interface(index, "d0", bytes.fromhex("020000000001"))})
out = {"prefixes": len(routes.table)}
out["unresolved"] = routes.hop(socket.inet_aton("10.9.0.7")) is None
time.sleep(0.2)
out["kernel_neigh"] = subprocess.run(["ip", "neigh", "show", "10.9.0.7"], capture_output=True, text=True).stdout
ip("neigh", "replace", "10.9.0.7", "lladdr", "02:00:00:00:00:07", "dev", "d0", "nud", "permanent")
ip("route", "add", "203.0.113.0/24", "via", "10.9.0.7")
time.sleep(0.2)
news = False
while select.select([routes], [], [], 0.2)[0]:  # as the director's loop does: while readable
    news |= routes.poll_events()
out["news"] = news
hop = routes.hop(socket.inet_aton("10.9.0.7"))
out["direct"] = hop.eth[:6].hex() if hop else None
hop = routes.hop(socket.inet_aton("203.0.113.50"))
out["via"] = hop.eth[:6].hex() if hop else None
out["outside"] = routes.hop(socket.inet_aton("198.51.100.1")) is None
print(json.dumps(out))
"""


def test_routes_and_neighbours_follow_the_kernel():
    net = Netns()
    try:
        net.add("routes")
        net.ip("routes", "link", "add", "d0", "type", "veth", "peer", "name", "d1")
        for name in ("d0", "d1"):
            net.ip("routes", "link", "set", name, "up")
        net.ip("routes", "addr", "add", "10.9.0.1/24", "dev", "d0")
        report = json.loads(net.exec("routes", sys.executable, "-c", PROBE, timeout=30).stdout)
    finally:
        net.teardown()
    assert report["prefixes"] >= 1  # 10.9.0.0/24 from the dump
    assert report["unresolved"] is True
    assert "10.9.0.7" in report["kernel_neigh"]  # the kernel was asked to resolve it
    assert report["news"] is True
    assert report["direct"] == report["via"] == "020000000007"
    assert report["outside"] is True  # no default route in this namespace
