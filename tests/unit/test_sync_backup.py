"""The backup (ipvs.md §5): adoption with the received state, timeout and flags, binding to its own real
servers, syncid filtering, what is skipped; and that adopted connections carry traffic after a failover."""

from __future__ import annotations

from scapy.layers.inet import IP, TCP

from pylvs.control import api
from pylvs.engine import tcpstate
from pylvs.engine.services import SVC_F_PERSISTENT, Method, VirtualService, pack_ip
from pylvs.ipvs_uapi import CONN_F_INACTIVE, CONN_F_MASQ, CONN_F_NOOUTPUT, CONN_F_SYNC, CONN_F_TEMPLATE
from pylvs.sync import proto
from pylvs.sync.backup import SyncBackup
from pylvs.sync.master import SyncMaster
from tests.unit.director import CLIENT, RIPS, VIP, frame, from_client, from_rs, make_engine, parse

CPORT = (40000).to_bytes(2, "big")


def record(state=tcpstate.ESTABLISHED, rip=RIPS[1], flags=CONN_F_MASQ, timeout=850, cport=CPORT, **kw):
    return proto.SyncConn(6, pack_ip(CLIENT), cport, pack_ip(VIP), b"\0\x50", pack_ip(rip), b"\x1f\x90",
                          flags, state, timeout=timeout, **kw)


def backup_of(engine=None, syncid=0, maxlen=1472):
    engine = engine or make_engine()
    return engine, SyncBackup(engine, syncid=syncid, maxlen=maxlen)


def receive(backup, *conns, syncid=0, version=1, now=100.0):
    backup.receive(proto.encode_message(list(conns), syncid, version), now)


def only_conn(engine):
    (conn,) = engine.conns.conns()
    return conn


def dest(engine, rip):
    return next(iter(engine.table)).find_dest(pack_ip(rip), 8080)


def test_an_established_connection_is_adopted_with_the_sent_state_and_timeout():
    engine, backup = backup_of()
    receive(backup, record())
    conn = only_conn(engine)
    assert (conn.state, conn.timeout, conn.expires, conn.in_pkts) == (tcpstate.ESTABLISHED, 850, 100.0 + 850, 3)
    assert conn.flags & CONN_F_SYNC and not conn.flags & CONN_F_INACTIVE
    assert conn.dest is dest(engine, RIPS[1])
    assert (conn.dest.activeconns, conn.dest.inactconns) == (1, 0)
    # not a connection this director scheduled: no new-connection counts
    svc = next(iter(engine.table))
    assert (conn.dest.stats.conns, svc.stats.conns, engine.total.conns) == (0, 0, 0)
    listed = api.handle(engine, {"op": "list-conns"}, 101.0)["result"]["conns"]
    assert [(c["state"], c["daddr"], c["dport"], c["expires"]) for c in listed] == [
        ("ESTABLISHED", RIPS[1], 8080, 849)]
    assert backup.stats["conns"] == 1


def test_after_a_failover_the_adopted_connection_carries_traffic_both_ways():
    engine, backup = backup_of()
    receive(backup, record())
    (out,) = engine.process(frame(from_client(TCP(sport=40000, dport=80, flags="PA") / b"more")), 1, 101.0)
    sent = parse(out[1])
    assert (sent[IP].dst, sent[TCP].dport, out[0]) == (RIPS[1], 8080, 2)
    (back,) = engine.process(frame(from_rs(RIPS[1], TCP(sport=8080, dport=40000, flags="A"))), 2, 101.1)
    got = parse(back[1])
    assert (got[IP].src, got[TCP].sport, got[IP].dst) == (VIP, 80, CLIENT)
    assert only_conn(engine).state == tcpstate.ESTABLISHED and engine.drops["no_conn"] == 0


def test_updates_follow_state_and_activity():
    engine, backup = backup_of()
    receive(backup, record())
    receive(backup, record(tcpstate.CLOSE_WAIT, flags=CONN_F_INACTIVE, timeout=60), now=200.0)
    conn = only_conn(engine)
    assert (conn.state, conn.timeout, conn.expires) == (tcpstate.CLOSE_WAIT, 60, 260.0)
    assert (conn.dest.activeconns, conn.dest.inactconns) == (0, 1)
    assert engine.conns.due(259.0) == [] and engine.conns.due(261.0) == [conn]


def test_version_0_uses_the_states_default_timeouts():
    engine, backup = backup_of()
    receive(backup, record(timeout=0), record(tcpstate.FIN_WAIT, timeout=0, cport=b"\x9c\x41"), version=0)
    assert sorted(c.timeout for c in engine.conns.conns()) == [120, 900]


def test_syncid_filtering():
    engine, backup = backup_of(syncid=5)
    receive(backup, record(), syncid=6)
    assert len(engine.conns) == 0 and backup.stats["other_syncid"] == 1
    receive(backup, record(), syncid=5)
    assert len(engine.conns) == 1
    engine, backup = backup_of(syncid=0)  # 0 takes every master's messages
    receive(backup, record(), syncid=6)
    assert len(engine.conns) == 1


def test_no_such_service_or_real_server_means_no_connection():
    engine, backup = backup_of()
    other_vip = record()
    other_vip.vaddr = pack_ip("192.0.2.77")
    receive(backup, other_vip, record(rip="10.1.0.99"))
    assert len(engine.conns) == 0 and backup.stats["not_adopted"] == 2


def test_a_connection_replaced_on_the_master_replaces_it_here_but_old_news_is_ignored():
    engine, backup = backup_of()
    receive(backup, record(rip=RIPS[1]))
    receive(backup, record(rip=RIPS[0], flags=CONN_F_INACTIVE, state=tcpstate.TIME_WAIT))  # the old one's end
    assert only_conn(engine).daddr == pack_ip(RIPS[1])
    receive(backup, record(rip=RIPS[0]))
    conn = only_conn(engine)
    assert conn.daddr == pack_ip(RIPS[0]) and conn.dest.activeconns == 1
    assert dest(engine, RIPS[1]).activeconns == 0


def test_the_backups_own_real_server_decides_the_method():
    engine, backup = backup_of(make_engine(method=Method.ROUTE, rport=80))
    rec = record(flags=CONN_F_MASQ)
    rec.dport = b"\0\x50"
    receive(backup, rec)
    conn = only_conn(engine)
    assert conn.dest.method == Method.ROUTE and conn.flags & CONN_F_NOOUTPUT


def test_an_adopted_template_keeps_persistence_across_the_failover():
    engine, backup = backup_of()
    engine.table.edit_service(VirtualService(6, pack_ip(VIP), 80, "rr", flags=SVC_F_PERSISTENT, timeout=360))
    template = record(proto.TEMPLATE_ASSURED, rip=RIPS[0], flags=CONN_F_TEMPLATE | CONN_F_INACTIVE,
                      timeout=300, cport=b"\0\0")
    receive(backup, template)
    (tmpl,) = engine.conns.templates.values()
    assert tmpl.state_name() == "ASSURED" and (tmpl.timeout, tmpl.expires) == (300, 400.0)
    assert dest(engine, RIPS[0]).persistconns == 1
    # rr alone would pick the newest real server (RIPS[2]); the template sends the client to RIPS[0]
    (out,) = engine.process(frame(from_client(TCP(sport=40001, dport=80, flags="S"))), 1, 101.0)
    assert parse(out[1])[IP].dst == RIPS[0]
    template.timeout = 0
    receive(backup, template, version=0)
    assert tmpl.timeout == 180


def test_connections_the_backup_cannot_represent_are_skipped_one_by_one():
    engine, backup = backup_of()
    v6 = record(cport=b"\0\1")
    v6.ipv6 = True
    v6.caddr = v6.vaddr = v6.daddr = bytes(16)
    esp = record(cport=b"\0\2")
    esp.protocol = 50  # no IPVS protocol
    skipped = [v6, esp, record(state=11, cport=b"\0\3"), record(cport=b"\0\4", pe_data=b"call", pe_name=b"bogus")]
    receive(backup, *skipped, record())
    assert len(engine.conns) == 1
    assert {k: v for k, v in backup.stats.items() if k.startswith("skipped")} == {
        "skipped_protocol": 1, "skipped_state": 1, "skipped_persistence_engine": 1}
    assert backup.stats["not_adopted"] == 1  # the IPv6 one is read, but has no service here
    udp = record(state=1, cport=b"\0\5")
    udp.protocol = 17
    receive(backup, udp)
    assert backup.stats["skipped_state"] == 2


def test_an_unknown_mandatory_option_skips_its_connection():
    engine, backup = backup_of()
    data = bytearray(proto.encode_message([record()]))
    data[8 + 2:8 + 4] = (36 + 4).to_bytes(2, "big")
    data += bytes([9, 2, 0, 0])
    data[2:4] = len(data).to_bytes(2, "big")
    backup.receive(bytes(data), 100.0)
    assert len(engine.conns) == 0 and backup.stats["skipped_unknown_option"] == 1


def test_malformed_and_oversized_messages_are_dropped_and_counted():
    engine, backup = backup_of(maxlen=1024)
    backup.receive(b"\0\0\0", 100.0)
    good = proto.encode_message([record()])
    backup.receive(good[:-1], 100.0)
    big = proto.encode_message([record(cport=i.to_bytes(2, "big")) for i in range(1, 40)])
    backup.receive(big, 100.0)
    assert len(engine.conns) == 0
    assert (backup.stats["rejected_short"], backup.stats["rejected_size_mismatch"], backup.stats["too_long"]) == (
        1, 1, 1)


def test_master_to_backup_in_process():
    master_engine, backup_engine = make_engine(), make_engine()
    backup = SyncBackup(backup_engine)
    master = SyncMaster(lambda m: backup.receive(m, 50.0))
    events = master_engine.subscribe(services=False, conns=True, packets=True)
    for sport in range(41000, 41005):
        for flags in ("S", "A", "PA", "A"):
            master_engine.process(frame(from_client(TCP(sport=sport, dport=80, flags=flags))), 1, 10.0)
    master.follow(events)
    master.flush()

    def table(engine):
        return sorted((c.in_key, c.daddr, c.dport, c.state) for c in engine.conns.conns())

    assert len(table(backup_engine)) == 5 and table(backup_engine) == table(master_engine)
