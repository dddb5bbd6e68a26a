"""Malformed and unsupported frames are dropped and counted; nothing ever raises."""

from __future__ import annotations

import random

from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import ARP, Ether

from pylvs.packet import vnet
from tests.unit.director import CLIENT, CLIENT_MAC, VIP, VIP_MAC, frame, from_client, make_engine, parse

SYN = TCP(sport=40000, dport=80, flags="S")


def run(engine, buf):
    return engine.process(bytearray(buf), 1, 0.0)


def test_truncated_frames():
    e = make_engine()
    full = bytes(frame(from_client(SYN)))
    for cut in range(0, len(full)):
        assert run(e, full[:cut]) == []
    assert e.drops["runt"] + e.drops["malformed"] >= len(full) - 40


def test_bad_ihl_and_lengths():
    e = make_engine()
    for ihl in (0, 3, 4, 15):
        pkt = from_client(SYN)
        pkt[IP].ihl = ihl
        assert run(e, frame(pkt)) == []
    pkt = from_client(SYN)
    pkt[IP].len = 1000  # longer than the frame
    assert run(e, frame(pkt)) == []
    pkt = from_client(SYN)
    pkt[IP].len = 30  # shorter than IP + TCP headers
    assert run(e, frame(pkt)) == []
    pkt = from_client(SYN)
    pkt[IP].version = 6
    assert run(e, frame(pkt)) == []
    assert e.drops["malformed"] == 7


def test_bad_ip_header_checksum():
    e = make_engine()
    pkt = from_client(SYN)
    pkt[IP].chksum = 0x1234
    assert run(e, frame(pkt)) == []
    assert e.drops["bad_ip_checksum"] == 1


def test_fragments_are_dropped():
    e = make_engine()
    first = from_client(SYN)
    first[IP].flags = "MF"
    later = from_client(SYN)
    later[IP].frag = 10
    assert run(e, frame(first)) == [] and run(e, frame(later)) == []
    assert e.drops["fragment"] == 2


def test_unknown_protocol_to_vip():
    e = make_engine()
    assert run(e, frame(Ether(src=CLIENT_MAC, dst=VIP_MAC) / IP(src=CLIENT, dst=VIP, proto=50) / (b"x" * 20))) == []
    assert e.drops["unknown_protocol"] == 1


def test_no_service_port():
    e = make_engine()
    assert run(e, frame(from_client(TCP(sport=1, dport=443, flags="S")))) == []
    assert e.drops["no_service"] == 1


def test_arp_request_for_vip_is_answered_and_others_ignored():
    e = make_engine()
    req = Ether(src=CLIENT_MAC, dst="ff:ff:ff:ff:ff:ff") / ARP(op=1, hwsrc=CLIENT_MAC, psrc=CLIENT, pdst=VIP)
    out = run(e, frame(req))
    assert len(out) == 1
    rep = parse(out[0][1])
    assert rep[ARP].op == 2 and rep[ARP].psrc == VIP and rep[ARP].hwsrc == VIP_MAC
    assert rep[ARP].pdst == CLIENT and rep[ARP].hwdst == CLIENT_MAC and rep.dst == CLIENT_MAC
    other = Ether(src=CLIENT_MAC, dst="ff:ff:ff:ff:ff:ff") / ARP(op=1, psrc=CLIENT, pdst="192.0.2.77")
    assert run(e, frame(other)) == []
    assert run(e, frame(req)[:30]) == []


def test_frames_for_other_macs_are_ignored():
    e = make_engine()
    pkt = from_client(SYN)
    pkt.dst = "02:aa:bb:cc:dd:ee"
    assert run(e, frame(pkt)) == []
    assert len(e.conns) == 0


def test_random_garbage_never_raises():
    e = make_engine()
    rng = random.Random(1)
    base = bytes(frame(from_client(SYN)))
    for _ in range(5000):
        buf = bytearray(base)
        for _ in range(rng.randint(1, 8)):
            buf[rng.randrange(vnet.VNET_HDR_LEN, len(buf))] = rng.randrange(256)
        if rng.random() < 0.3:
            buf = buf[: rng.randrange(len(buf))]
        e.process(buf, 1, 0.0)
    for _ in range(2000):
        e.process(bytearray(rng.randbytes(rng.randrange(0, 200))), rng.choice([1, 2, 3]), 0.0)
