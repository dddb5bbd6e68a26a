"""The TPACKET_V2 ring walk on a bytearray laid out as the kernel lays out its ring: the reader
never loses its place (issue 10, item 1: a ring wedged after a SYN flood)."""

from __future__ import annotations

import struct

import pytest

from pylvs.io.afpacket import RESYNC_AGE, TP_STATUS_COPY, TP_STATUS_LOSING, TP_STATUS_USER, SlotRing
from pylvs.packet.vnet import VNET_HDR_LEN

SLOTS = 8
SLOT = 256
MAC = 48  # where the Ethernet header starts in a slot; the virtio_net_hdr sits just before it
_HDR = struct.Struct("=IIIHHII")  # tpacket2_hdr: status, len, snaplen, mac, net, sec, nsec


class Ring:
    """A fake kernel side: puts frames into slots, as tpacket_rcv does."""

    def __init__(self) -> None:
        self.buf = bytearray(SLOTS * SLOT)
        self.clock = 1000  # seconds, as the kernel stamps frames
        self.now = 2000.0  # the reader's wall clock: frames are long ready unless a test says so
        self.walk = SlotRing(memoryview(self.buf), SLOT, SLOTS, clock=lambda: self.now)

    def put(self, slot: int, payload: bytes, status: int = TP_STATUS_USER, length: int | None = None) -> None:
        self.clock += 1
        off = slot * SLOT
        _HDR.pack_into(self.buf, off, status, len(payload) if length is None else length, len(payload),
                       MAC, MAC + 14, self.clock, 0)
        self.buf[off + MAC - VNET_HDR_LEN:off + MAC] = bytes(VNET_HDR_LEN)
        self.buf[off + MAC:off + MAC + len(payload)] = payload

    def owner(self, slot: int) -> int:
        return int.from_bytes(self.buf[slot * SLOT:slot * SLOT + 4], "little")

    def drain(self) -> list[bytes]:
        seen: list[bytes] = []
        self.walk.drain(lambda frame: seen.append(bytes(frame[VNET_HDR_LEN:])))
        return seen


def test_frames_in_ring_order_and_slots_given_back():
    ring = Ring()
    for slot in range(3):
        ring.put(slot, b"frame%d" % slot)
    assert ring.drain() == [b"frame0", b"frame1", b"frame2"]
    assert [ring.owner(s) for s in range(3)] == [0, 0, 0]
    assert ring.walk.next == 3 and ring.walk.resyncs == 0
    assert ring.drain() == [] and ring.walk.resyncs == 0  # nothing anywhere: no resync


def test_ready_tells_whether_the_next_frame_waits_without_taking_it():
    ring = Ring()
    assert not ring.walk.ready()
    ring.put(0, b"frame0")
    assert ring.walk.ready() and ring.walk.ready() and ring.owner(0) == TP_STATUS_USER
    assert ring.drain() == [b"frame0"] and not ring.walk.ready()


def test_wakeup_with_nothing_at_the_expected_slot_resynchronises_to_the_oldest():
    """The reader expects slot 2 but the kernel has filled 5, 6, 7 and (wrapping) 0: it must not
    wait at slot 2 forever while the socket stays readable."""
    ring = Ring()
    ring.walk.next = 2
    for slot, payload in ((5, b"a"), (6, b"b"), (7, b"c"), (0, b"d")):
        ring.put(slot, payload)
    assert ring.drain() == [b"a", b"b", b"c", b"d"]
    assert ring.walk.resyncs == 1 and ring.walk.next == 1
    ring.put(1, b"e")
    assert ring.drain() == [b"e"] and ring.walk.resyncs == 1  # back in step


def test_resync_goes_to_the_oldest_frame_not_the_nearest():
    ring = Ring()
    ring.walk.next = 3
    ring.put(6, b"older")
    ring.put(1, b"newer")
    assert ring.drain() == [b"older"]  # slot 7 is the kernel's: the run ends there
    assert ring.drain() == [b"newer"]
    assert ring.walk.resyncs == 2


def test_slot_still_being_written_is_waited_for_not_skipped():
    """Another CPU may still be filling the expected slot while a later one is ready: the reader
    does not jump (which would reorder frames) unless the ready frame has waited too long."""
    ring = Ring()
    ring.walk.next = 2
    ring.put(3, b"later")
    ring.now = ring.clock + RESYNC_AGE / 2
    assert ring.drain() == [] and ring.walk.resyncs == 0
    ring.put(2, b"earlier")  # the write finished
    assert ring.drain() == [b"earlier", b"later"] and ring.walk.resyncs == 0
    ring.walk.next = 5
    ring.put(6, b"stuck")
    ring.now = ring.clock + RESYNC_AGE * 2
    assert ring.drain() == [b"stuck"] and ring.walk.resyncs == 1


def test_a_failing_handler_does_not_lose_the_place():
    ring = Ring()
    ring.put(0, b"bad")
    ring.put(1, b"good")

    def handle(frame):
        raise ValueError("engine bug")

    with pytest.raises(ValueError):
        ring.walk.drain(handle)
    assert ring.owner(0) == 0 and ring.walk.next == 1  # given back, and the reader moved on
    assert ring.drain() == [b"good"] and ring.walk.resyncs == 0


def test_truncated_frame_is_counted_and_given_back():
    ring = Ring()
    ring.put(0, b"cut", status=TP_STATUS_USER | TP_STATUS_COPY, length=70000)
    ring.put(1, b"whole")
    assert ring.drain() == [b"whole"]
    assert ring.walk.truncated == 1 and ring.owner(0) == 0


def test_losing_flag_is_noticed():
    ring = Ring()
    ring.put(0, b"x", status=TP_STATUS_USER | TP_STATUS_LOSING)
    ring.drain()
    assert ring.walk.losing


def test_one_ring_worth_per_call():
    ring = Ring()
    for slot in range(SLOTS):
        ring.put(slot, b"%d" % slot)
    assert len(ring.drain()) == SLOTS
    ring.put(0, b"again")
    assert ring.drain() == [b"again"]


def _tcp_frame(src: str, dst: str, sport: int, dport: int, options: bytes = b"") -> bytes:
    from scapy.layers.inet import IP, TCP
    from scapy.layers.l2 import Ether

    return bytes(Ether() / IP(src=src, dst=dst, options=options) / TCP(sport=sport, dport=dport, flags="A"))


def test_waiting_looks_for_a_frame_of_one_flow_without_taking_any():
    import socket

    key = socket.inet_aton("10.1.0.11") + socket.inet_aton("192.0.2.100") + (8080).to_bytes(2, "big") + \
        (40000).to_bytes(2, "big")
    ring = Ring()
    assert not ring.walk.waiting(key)
    ring.put(0, _tcp_frame("10.1.0.12", "192.0.2.100", 8080, 40000))  # another real server
    ring.put(1, _tcp_frame("10.1.0.11", "192.0.2.100", 8080, 40001))  # another client port
    assert not ring.walk.waiting(key)
    ring.put(2, _tcp_frame("10.1.0.11", "192.0.2.100", 8080, 40000))
    assert ring.walk.waiting(key) and ring.owner(2) == TP_STATUS_USER  # found, not taken
    assert len(ring.drain()) == 3 and not ring.walk.waiting(key)
    # Ports it cannot find (IP options): the frame may be the flow's.
    from scapy.layers.inet import IPOption_NOP

    ring.put(3, _tcp_frame("10.1.0.11", "192.0.2.100", 9999, 9999, options=[IPOption_NOP()] * 4))
    assert ring.walk.waiting(key)


def test_an_ipv6_frame_is_matched_by_its_36_byte_key():
    import socket

    from scapy.layers.inet import TCP
    from scapy.layers.inet6 import IPv6
    from scapy.layers.l2 import Ether

    from pylvs.io.afpacket import _carries

    frame = memoryview(bytes(Ether() / IPv6(src="2001:db8::11", dst="2001:db8::1") / TCP(sport=8080, dport=40000)))
    key = socket.inet_pton(socket.AF_INET6, "2001:db8::11") + socket.inet_pton(socket.AF_INET6, "2001:db8::1") + \
        (8080).to_bytes(2, "big") + (40000).to_bytes(2, "big")
    assert _carries(frame, key)
    assert not _carries(frame, key[:-1] + b"\x01")  # another client port
    assert not _carries(frame, key[:12])  # an IPv4 key never matches an IPv6 frame
