"""The transmit ring: queued frames leave only at flush(), all of them, in order; long ones on their own."""

from __future__ import annotations

import sys

import pytest

from pylvs.lab.netns import Netns

SCRIPT = r"""
import socket, sys, time
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether
from pylvs.io.txring import TxRing
from pylvs.packet.vnet import EMPTY

from pylvs.datapath.bpf.loader import in_netns

def open_rx():
    rx = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0800))
    rx.bind(("b0", 0))
    rx.settimeout(0.3)
    return rx

rx = in_netns(sys.argv[1], open_rx)  # the receiver in namespace b, the sender here in a

def received():
    out = []
    try:
        while True:
            out.append(Ether(rx.recv(65536)))
    except TimeoutError:
        return out

def frame(n, size=10):
    return EMPTY + bytes(Ether(dst="02:00:00:00:00:02") / IP(src="10.9.0.1", dst="10.9.0.2")
                         / UDP(sport=1000 + n, dport=9) / (b"x" * size))

direct = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
direct.bind(("a0", 0))
tx = TxRing("a0", lambda f: direct.send(f[10:]), slots=8)  # (this one has no virtio_net_hdr)
for n in range(5):
    tx.queue(frame(n))
print("before", len(received()))
tx.flush()
print("after", [p[UDP].sport - 1000 for p in received()])
for n in range(20):  # more than the ring holds: it flushes on its own when full
    tx.queue(frame(n))
tx.queue(frame(20, 1900))  # (nearly a slot: still fits)
tx.queue(frame(21, 2100))  # longer than a slot (the MTU is 9000): flushes, then leaves on its own
tx.queue(frame(22))
tx.flush()
got = received()
print("order", [p[UDP].sport - 1000 for p in got], "direct", tx.direct)
tx.close()
"""


@pytest.fixture
def net():
    net = Netns()
    try:
        net.add("a")
        net.add("b")
        net.veth("a", "a0", "b", "b0")
        net.mtu("a", "a0", 9000)
        net.mtu("b", "b0", 9000)
        yield net
    finally:
        net.teardown()
        assert net.leftovers() == []


def test_frames_leave_at_flush_in_order(net):
    out = net.exec("a", sys.executable, "-c", SCRIPT, f"/run/netns/{net.name('b')}", timeout=30).stdout.splitlines()
    assert out[0] == "before 0"
    assert out[1] == "after [0, 1, 2, 3, 4]"
    order = out[2].split(" direct ")
    assert order[0] == "order " + str(list(range(23)))
    assert order[1] == "1"

