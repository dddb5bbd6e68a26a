"""Connection sync with IPv6 connections: the master sends them in the kernel's version-1 IPv6 layout
(type STYPE_F_INET6, 72 bytes, 16-byte addresses), a backup adopts them, and after a failover the
adopted NAT66 connection carries the real server's replies. Version 0 has no IPv6 layout."""

from __future__ import annotations

import struct

from scapy.layers.inet import TCP
from scapy.layers.inet6 import IPv6

from pylvs.engine import tcpstate
from pylvs.engine.services import SVC_F_PERSISTENT, VirtualService, pack_ip, prefix_mask
from pylvs.sync import proto
from pylvs.sync.backup import SyncBackup
from pylvs.sync.config import SyncSettings
from pylvs.sync.master import SyncMaster
from tests.unit.director import parse
from tests.unit.test_engine_ipv6 import CLIENT6, VIP6, frame, from_client, from_rs, make_engine6


def run_master(version: int = 1, persistent: bool = False):
    engine = make_engine6()
    if persistent:
        engine.table.edit_service(VirtualService(6, pack_ip(VIP6), 80, "rr", flags=SVC_F_PERSISTENT, timeout=300,
                                                 netmask=prefix_mask(64, 16)))
    sent: list[bytes] = []
    master = SyncMaster(sent.append, syncid=9, settings=SyncSettings(version=version))
    events = engine.subscribe(services=False, conns=True, packets=True)
    out = engine.process(frame(from_client(TCP(sport=40000, dport=80, flags="S"))), 1, 0.0)
    rip = parse(out[0][1])[IPv6].dst
    engine.process(frame(from_rs(rip, TCP(sport=8080, dport=40000, flags="SA"))), 2, 0.1)
    for n in range(3):
        engine.process(frame(from_client(TCP(sport=40000, dport=80, flags="A"))), 1, 0.2 + n / 10)
    master.follow(events)
    master.flush()
    return engine, master, sent, rip


def test_the_master_sends_ipv6_connections_in_the_kernels_layout():
    _, _, sent, rip = run_master()
    (message,) = sent
    # header: reserved, syncid, size, nr_conns, version 1, spare; then the 72-byte IPv6 connection
    _, syncid, size, nr_conns, version, _ = struct.unpack_from("!BBHBbH", message)
    assert (syncid, size, nr_conns, version) == (9, len(message), 1, 1) and size == 8 + 72
    stype, protocol, ver_size, flags, state, cport, vport, dport, fwmark, timeout = struct.unpack_from(
        "!BBHIHHHHII", message, 8)
    assert (stype, protocol, ver_size & 0x0FFF, state) == (0x01, 6, 72, tcpstate.ESTABLISHED)
    assert (cport, vport, dport, fwmark, timeout) == (40000, 80, 8080, 0, 900)
    assert flags & 0x7 == 0  # IP_VS_CONN_F_MASQ
    assert message[8 + 24:8 + 72] == pack_ip(CLIENT6) + pack_ip(VIP6) + pack_ip(rip)


def test_a_backup_adopts_them_and_forwards_replies_after_the_failover():
    _, _, sent, rip = run_master(persistent=True)
    backup_engine = make_engine6()
    backup_engine.table.edit_service(VirtualService(6, pack_ip(VIP6), 80, "rr", flags=SVC_F_PERSISTENT, timeout=300,
                                                    netmask=prefix_mask(64, 16)))
    backup = SyncBackup(backup_engine)
    for message in sent:
        backup.receive(message, 10.0)
    assert backup.stats["conns"] == 2  # the connection and its /64 template
    (tmpl,) = backup_engine.conns.templates.values()
    assert tmpl.caddr == pack_ip("2001:db8:c::") and tmpl.daddr == pack_ip(rip)
    out = backup_engine.process(frame(from_rs(rip, TCP(sport=8080, dport=40000, flags="A") / b"reply")), 2, 11.0)
    rep = parse(out[0][1])
    assert (rep[IPv6].src, rep[IPv6].dst, rep[TCP].sport) == (VIP6, CLIENT6, 80)
    # a new client of the same /64 goes where the template says
    out = backup_engine.process(frame(from_client(TCP(sport=41000, dport=80, flags="S"), src="2001:db8:c::77")),
                                1, 12.0)
    assert parse(out[0][1])[IPv6].dst == rip


def test_version_0_skips_ipv6_connections():
    _, master, sent, _ = run_master(version=0)
    assert sent == [] and master.stats["skipped_ipv6_v0"] >= 1
    assert proto.decode(proto.encode_message([], 0, 0)) is not None
