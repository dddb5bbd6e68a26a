"""Persistence templates (ipvs.md §3.5): same client network -> same real server while the template lives."""

from __future__ import annotations

import socket

from scapy.layers.inet import IP, TCP

from pylvs.engine.services import SVC_F_PERSISTENT, pack_ip
from tests.unit.director import RIPS, frame, from_client, from_rs, make_engine, parse


def persistent_engine(timeout=300, netmask="255.255.255.255", **kw):
    e = make_engine(**kw)
    svc = next(iter(e.table))
    svc.flags |= SVC_F_PERSISTENT
    svc.timeout = timeout
    svc.netmask = pack_ip(netmask)
    return e, svc


def syn(e, t, sport, src="192.0.2.100", dport=80):
    out = e.process(frame(from_client(TCP(sport=sport, dport=dport, flags="S"), src=src)), 1, t)
    return parse(out[0][1])[IP].dst if out else None


def establish(e, t, sport, rip, src="192.0.2.100"):
    e.process(frame(from_rs(rip, TCP(sport=8080, dport=sport, flags="SA"), dst=src)), 2, t)
    e.process(frame(from_client(TCP(sport=sport, dport=80, flags="A"), src=src)), 1, t)


def templates(e):
    return [c for c in e.conns.conns() if c.template]


def test_same_client_keeps_its_real_server_across_connections():
    e, _ = persistent_engine()
    first = syn(e, 0, 40000)
    assert [syn(e, 1, 40001 + i) for i in range(5)] == [first] * 5
    (tmpl,) = templates(e)
    assert tmpl.cport == b"\0\0" and tmpl.state_name() == "NONE" and tmpl.n_control == 6
    assert socket.inet_ntoa(tmpl.daddr) == first and int.from_bytes(tmpl.dport, "big") == 8080
    dest = tmpl.dest
    assert dest.persistconns == 1 and dest.inactconns + dest.activeconns == 6


def test_other_clients_are_scheduled_and_netmask_groups_clients():
    e, _ = persistent_engine(netmask="255.255.255.0")
    a = syn(e, 0, 40000, src="192.0.2.100")
    assert syn(e, 0, 40000, src="192.0.2.101") == a  # same /24: same template
    e2, _ = persistent_engine()
    a = syn(e2, 0, 40000, src="192.0.2.100")
    b = syn(e2, 0, 40000, src="192.0.2.101")
    assert a != b


def test_unassured_template_goes_with_its_last_connection():
    e, _ = persistent_engine()
    syn(e, 0, 40000)  # never answered: SYN_RECV, 60 s
    assert len(templates(e)) == 1
    e.tick(61)
    assert templates(e) == [] and len(e.conns) == 0


def test_assured_template_outlives_its_connections_until_its_timeout():
    e, _ = persistent_engine(timeout=300)
    rip = syn(e, 0, 40000)
    establish(e, 0.1, 40000, rip)
    (tmpl,) = templates(e)
    assert tmpl.state_name() == "ASSURED"
    e.process(frame(from_client(TCP(sport=40000, dport=80, flags="R"))), 1, 1)  # CLOSE, 10 s
    e.tick(12)
    assert len(e.conns) == 1 and templates(e) == [tmpl]
    assert syn(e, 100, 40001) == rip  # still persistent, and the template is refreshed
    e.process(frame(from_client(TCP(sport=40001, dport=80, flags="R"))), 1, 100)
    e.tick(399)
    assert templates(e) == [tmpl]
    e.tick(401)
    assert templates(e) == [] and tmpl.dest.persistconns == 0


def test_quiesced_server_keeps_persistent_clients_unless_expire_quiescent_template():
    for expire, expect_same in ((False, True), (True, False)):
        e, svc = persistent_engine()
        e.settings.expire_quiescent_template = expire
        rip = syn(e, 0, 40000)
        dest = svc.find_dest(pack_ip(rip), 8080)
        dest.weight = 0
        assert (syn(e, 1, 40001) == rip) is expect_same


def test_port_zero_persistent_service_accepts_any_port():
    e = make_engine(vport=0, rport=0)
    svc = next(iter(e.table))
    svc.flags |= SVC_F_PERSISTENT
    svc.timeout = 360
    a = syn(e, 0, 40000, dport=443)
    assert a in RIPS
    out = e.process(frame(from_client(TCP(sport=40001, dport=8443, flags="S"))), 1, 0)
    pkt = parse(out[0][1])
    assert pkt[IP].dst == a and pkt[TCP].dport == 8443  # port 0 real server: the packet's port
    assert len(templates(e)) == 1
