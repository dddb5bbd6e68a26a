"""A real TPACKET_V2 ring in a namespace of its own: ring overflow is counted where an operator can
read it, and the reader stays in step with the kernel across a resynchronisation."""

from __future__ import annotations

import json
import sys

from pylvs.lab.netns import Netns

PROBE = r"""
import json, socket, time
from pylvs.io.afpacket import RingSocket

ring = RingSocket("lo", slots=4, mark=None)
sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sink.bind(("127.0.0.1", 5555))
out = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
seen = []

def handle(frame):
    seen.append(bytes(frame[-8:]))

def send(n, tag):
    for i in range(n):
        out.sendto(b"%s%07d" % (tag, i), ("127.0.0.1", 5555))

send(40, b"a")                 # 4 fit in the ring, 36 are dropped by the kernel
ring.drain(handle)
first = list(seen)
send(1, b"b")                  # this frame carries TP_STATUS_LOSING: the drain reads the statistics
ring.drain(handle)
drops_seen_by_drain = ring.drops
# Lose our place on purpose, as the wedge did: the reader waits at a slot it already gave back
# (3) while the kernel fills 1 and 2.
ring.slot_ring.next = 3
send(2, b"c")
ring.drain(handle)             # too soon to be sure: another CPU could still be writing slot 3
early = len(seen)
time.sleep(0.1)
ring.drain(handle)
print(json.dumps({"first": [f.decode() for f in first], "all": [f.decode() for f in seen],
                  "drops_seen_by_drain": drops_seen_by_drain, "early": early, "counters": ring.counters()}))
"""


def test_overflow_is_counted_and_a_lost_place_is_found_again():
    net = Netns()
    try:
        net.add("ring")
        result = net.exec("ring", sys.executable, "-c", PROBE, timeout=30)
        report = json.loads(result.stdout)
    finally:
        net.teardown()
    assert report["first"] == ["a0000000", "a0000001", "a0000002", "a0000003"]
    assert report["drops_seen_by_drain"] == 36  # without anyone asking for counters
    assert report["early"] == 5
    assert report["all"][4:] == ["b0000000", "c0000000", "c0000001"]
    counters = report["counters"]
    assert counters["drops"] == 36 and counters["packets"] == 43
    assert counters["resyncs"] == 1 and counters["truncated"] == 0
