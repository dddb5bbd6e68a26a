"""Firewall-mark services: packets carrying the mark are scheduled whatever their address and port."""

from __future__ import annotations

from scapy.layers.inet import IP, TCP, UDP

from pylvs.engine.services import SVC_F_PERSISTENT, Method, RealServer, VirtualService, pack_ip
from tests.unit.director import RIPS, frame, from_client, make_engine, parse


def fwmark_engine(mark=7, persistent=False):
    e = make_engine(rips=[])
    svc = e.table.add_service(VirtualService(6, b"\0\0\0\0", 0, "rr", fwmark=mark,
                                             flags=SVC_F_PERSISTENT if persistent else 0,
                                             timeout=300 if persistent else 0))
    for rip in RIPS:
        e.table.add_dest(svc, RealServer(pack_ip(rip), 0, method=Method.MASQ))
    return e


def test_marked_packets_to_any_address_and_port_are_balanced():
    e = fwmark_engine()
    seen = []
    for i, (dst, dport) in enumerate([("192.0.2.50", 443), ("192.0.2.51", 8443), ("192.0.2.50", 443)]):
        out = e.process(frame(from_client(TCP(sport=3000 + i, dport=dport, flags="S"), dst=dst)), 1, 0, 7)
        pkt = parse(out[0][1])
        assert pkt[TCP].dport == dport  # real servers on port 0: the packet's port is kept
        seen.append(pkt[IP].dst)
    assert seen == [RIPS[2], RIPS[1], RIPS[0]]
    listed = [c for c in e.conns.conns() if not c.template]
    assert len(listed) == 3


def test_unmarked_or_other_marks_are_not_ours():
    e = fwmark_engine()
    pkt = frame(from_client(TCP(sport=3000, dport=443, flags="S"), dst="192.0.2.50"))
    assert e.process(bytearray(pkt), 1, 0) == []
    assert e.process(bytearray(pkt), 1, 0, 8) == []
    assert e.drops["no_service"] == 1  # the marked one found no service for mark 8


def test_persistent_fwmark_service_keeps_a_client_across_ports_and_protocols():
    e = fwmark_engine(persistent=True)
    first = parse(e.process(frame(from_client(TCP(sport=1, dport=80, flags="S"), dst="192.0.2.50")), 1, 0, 7)[0][1])
    other = parse(e.process(frame(from_client(TCP(sport=2, dport=443, flags="S"), dst="192.0.2.50")), 1, 0, 7)[0][1])
    assert first[IP].dst == other[IP].dst
    udp = parse(e.process(frame(from_client(UDP(sport=3, dport=53), dst="192.0.2.50")), 1, 0, 7)[0][1])
    assert udp[IP].dst == first[IP].dst  # one template per client for the whole mark
    (tmpl,) = [c for c in e.conns.conns() if c.template]
    assert tmpl.vport == b"\0\0"
