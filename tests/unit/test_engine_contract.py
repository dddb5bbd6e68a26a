"""The engine's contract: events pulled by independent consumers, coalesced table changes, FlowEntry
recipes per method, and the seams (no forwarder imports the engine; nothing outside it writes its state)."""

from __future__ import annotations

import ast
import pathlib

import pytest
from scapy.layers.inet import TCP, UDP

from pylvs.control import api
from pylvs.engine import flow, tcpstate
from pylvs.engine.events import ConnEvent, ConnEventKind, ServicesChanged
from pylvs.engine.services import Method, pack_ip
from tests.unit.director import CLIENT, RIPS, VIP, frame, from_client, from_rs, make_engine

PYLVS = pathlib.Path(api.__file__).parents[1]


def drain(sub) -> list:
    return list(sub)


def conn_events(sub) -> list[tuple[ConnEventKind, bytes]]:
    return [(e.kind, e.conn.in_key) for e in sub if isinstance(e, ConnEvent)]


def test_a_batch_of_operations_is_one_services_changed():
    engine = make_engine()
    sub = engine.subscribe()
    assert [type(e) for e in drain(sub)] == [ServicesChanged]  # the state at subscription
    ops = [{"op": "add-service", "service": {"protocol": "tcp", "addr": f"192.0.2.{i}", "port": 80}}
           for i in range(2, 27)]
    ops += [{"op": "add-dest", "svc": {"protocol": "tcp", "addr": f"192.0.2.{i}", "port": 80},
             "dest": {"addr": "10.1.0.11", "port": 80, "method": "masq"}} for i in range(2, 27)]
    answer = api.handle(engine, {"op": "batch", "ops": ops})
    assert answer["ok"], answer
    events = drain(sub)
    assert len(events) == 1 and isinstance(events[0], ServicesChanged)
    assert events[0].generation == engine.generation
    assert drain(sub) == []  # nothing changed since
    assert len(engine.owned) == 26  # the VIP of make_engine plus 25


def test_table_changes_and_standby_each_bump_the_generation_once_per_read():
    engine = make_engine()
    sub = engine.subscribe()
    drain(sub)
    svc = next(iter(engine.table))
    engine.table.add_laddr(svc, pack_ip("10.1.0.200"))
    engine.set_standby(True)
    engine.set_standby(True)  # no change
    (event,) = drain(sub)
    assert isinstance(event, ServicesChanged) and engine.owned == frozenset()
    engine.set_standby(False)
    (event2,) = drain(sub)
    assert event2.generation > event.generation
    assert engine.owned == {pack_ip(VIP), pack_ip("10.1.0.200")}


def test_two_consumers_each_receive_every_connection_event():
    engine = make_engine()
    first = engine.subscribe(services=False, conns=True)
    second = engine.subscribe(services=False, conns=True)
    engine.process(frame(from_client(TCP(sport=40000, dport=80, flags="S"))), 1, 1.0)
    seen_by_first = conn_events(first)  # the first consumer reads before the rest happens
    conn = engine.conns.conns()[0]
    engine.process(frame(from_rs("10.1.0.13", TCP(sport=8080, dport=40000, flags="SA"))), 2, 1.1)
    engine.process(frame(from_client(TCP(sport=40000, dport=80, flags="A"))), 1, 1.2)
    engine.tick(1.2 + engine.settings.tcp_timeouts[tcpstate.ESTABLISHED] + 1)
    key = conn.in_key
    start = [(ConnEventKind.CREATED, key), (ConnEventKind.STATE, key)]  # NONE -> SYN_RECV
    rest = [(ConnEventKind.STATE, key), (ConnEventKind.EXPIRED, key)]  # ESTABLISHED, then its timeout
    assert seen_by_first == start
    assert conn_events(first) == rest
    assert conn_events(second) == start + rest


def test_a_consumer_reporting_a_second_data_paths_work_is_not_told_it_back():
    """adopt_kernel and tcp_transition with `origin`: the CREATED and STATE events they make go to the
    other consumers only; a connection the adoption replaces is REMOVED for everyone."""
    engine = make_engine()
    reporter = engine.subscribe(services=False, conns=True)
    other = engine.subscribe(services=False, conns=True)
    svc = next(iter(engine.table))
    key = pack_ip(CLIENT) + pack_ip(VIP) + (40000).to_bytes(2, "big") + (80).to_bytes(2, "big")
    conn = engine.adopt_kernel(svc, svc.dests[0], key, 1.0, origin=reporter)
    assert conn is not None and conn.state == tcpstate.SYN_RECV
    engine.tcp_transition(key, 0x10, 1.1, origin=reporter)  # the client's ACK: ESTABLISHED
    assert conn.state == tcpstate.ESTABLISHED
    assert conn_events(reporter) == []
    assert conn_events(other) == [(ConnEventKind.CREATED, key), (ConnEventKind.STATE, key),
                                  (ConnEventKind.STATE, key)]
    engine.tcp_transition(key, 0x04, 1.2, origin=reporter)  # a RST: CLOSE, which a new SYN replaces
    again = engine.adopt_kernel(svc, svc.dests[0], key, 2.0, origin=reporter)
    assert again is not None and again is not conn
    assert conn_events(reporter) == [(ConnEventKind.REMOVED, key)]
    engine.process(frame(from_client(TCP(sport=40000, dport=80, flags="A"))), 1, 2.1)  # the engine's own
    assert [e.value for e in reporter if isinstance(e, ConnEvent)] == [tcpstate.ESTABLISHED]


def dr_conn_in_fin_wait(engine):
    engine.process(frame(from_client(TCP(sport=40000, dport=80, flags="S"))), 1, 1.0)
    engine.process(frame(from_client(TCP(sport=40000, dport=80, flags="A"))), 1, 1.1)
    engine.process(frame(from_client(TCP(sport=40000, dport=80, flags="FA"))), 1, 1.2)
    (conn,) = engine.conns.conns()
    assert conn.state == tcpstate.FIN_WAIT  # DR: only the client's half crosses the director
    return conn


def test_a_kernel_scheduled_syn_replaces_a_dr_connection_in_fin_wait():
    """The kernel took the DR connection's entries out at FIN_WAIT and scheduled the client's next SYN on
    the same port anew: the engine takes its choice (as conn_reuse_mode bit 2), not the old connection's
    real server, which would get the handshake's ACK without its SYN."""
    engine = make_engine(method=Method.ROUTE)
    old = dr_conn_in_fin_wait(engine)
    svc = next(iter(engine.table))
    other = next(d for d in svc.dests if d is not old.dest)
    new = engine.adopt_kernel(svc, other, old.in_key, 2.0)
    assert new is not None and new.dest is other and old.dead
    # The engine's own SYN on such a connection continues it, as IPVS with conn_reuse_mode 1.
    engine = make_engine(method=Method.ROUTE)
    old = dr_conn_in_fin_wait(engine)
    engine.process(frame(from_client(TCP(sport=40000, dport=80, flags="S"))), 1, 2.0)
    assert engine.conns.conns() == [old] and old.state == tcpstate.SYN_RECV


def test_state_event_carries_the_new_state_and_packet_subscriptions_the_count():
    engine = make_engine()
    sub = engine.subscribe(services=False, conns=True, packets=True)
    engine.process(frame(from_client(TCP(sport=40000, dport=80, flags="S"))), 1, 1.0)
    engine.process(frame(from_rs("10.1.0.13", TCP(sport=8080, dport=40000, flags="SA"))), 2, 1.1)
    engine.process(frame(from_client(TCP(sport=40000, dport=80, flags="A"))), 1, 1.2)
    got = [(e.kind, e.value) for e in sub]
    assert got == [(ConnEventKind.CREATED, 0), (ConnEventKind.STATE, tcpstate.SYN_RECV),
                   (ConnEventKind.COUNTED, 1), (ConnEventKind.STATE, tcpstate.ESTABLISHED),
                   (ConnEventKind.COUNTED, 2)]


def test_reuse_of_a_finished_connection_is_removed_then_created():
    engine = make_engine()
    engine.process(frame(from_client(TCP(sport=40000, dport=80, flags="S"))), 1, 1.0)
    engine.process(frame(from_rs("10.1.0.13", TCP(sport=8080, dport=40000, flags="SA"))), 2, 1.1)
    engine.process(frame(from_client(TCP(sport=40000, dport=80, flags="A"))), 1, 1.2)
    sub = engine.subscribe(services=False, conns=True)
    engine.process(frame(from_client(TCP(sport=40000, dport=80, flags="R"))), 1, 1.3)  # sES + rst = sCL
    engine.process(frame(from_client(TCP(sport=40000, dport=80, flags="S"))), 1, 2.0)
    got = [(e.kind, e.value) for e in sub if isinstance(e, ConnEvent)]
    assert got == [(ConnEventKind.STATE, tcpstate.CLOSE), (ConnEventKind.REMOVED, 0), (ConnEventKind.CREATED, 0),
                   (ConnEventKind.STATE, tcpstate.SYN_RECV)]


def test_unsubscribed_consumers_hear_nothing_more():
    engine = make_engine()
    sub = engine.subscribe(conns=True, packets=True)
    drain(sub)
    engine.unsubscribe(sub)
    engine.process(frame(from_client(TCP(sport=40000, dport=80, flags="S"))), 1, 1.0)
    engine.table.add_laddr(next(iter(engine.table)), pack_ip("10.1.0.200"))
    assert drain(sub) == [] and len(engine.conns) == 1


# -- FlowEntry recipes --------------------------------------------------------------------------

def established(method: Method, udp: bool = False):
    engine = make_engine(method=method, proto=17 if udp else 6)
    if method == Method.FULLNAT:
        engine.table.add_laddr(next(iter(engine.table)), pack_ip("10.1.0.200"))
    sub = engine.subscribe(services=False, conns=True)
    l4 = UDP(sport=40000, dport=80) if udp else TCP(sport=40000, dport=80, flags="S")
    engine.process(frame(from_client(l4)), 1, 1.0)
    (event,) = [e for e in sub if isinstance(e, ConnEvent) and e.kind == ConnEventKind.CREATED]
    return engine, event


@pytest.mark.parametrize("method", [Method.MASQ, Method.FULLNAT, Method.ROUTE, Method.TUNNEL])
def test_every_method_binds_a_flow_entry_whose_key_is_the_request(method):
    engine, event = established(method, udp=True)
    conn = event.conn
    f = conn.in_flow
    assert f.key == pack_ip(CLIENT) + pack_ip(VIP) + (40000).to_bytes(2, "big") + (80).to_bytes(2, "big")
    assert f.method == method and f.direction == flow.DIR_IN and f.proto == 17
    assert f.offloadable  # UDP: nothing for the engine to keep doing (the hop was resolved by the packet)
    if method in (Method.MASQ, Method.FULLNAT):
        assert conn.out_flow.key == conn.out_key and conn.out_flow.direction == flow.DIR_OUT
        assert event.flows == (conn.in_flow, conn.out_flow)
    else:
        assert conn.out_flow is None and event.flows == (conn.in_flow,)
    if method == Method.TUNNEL:
        assert f.encap == flow.ENCAP_IPIP and f.outer_dst == conn.daddr and f.outer_src == pack_ip("10.1.0.1")
    key = flow.KEY.unpack(f.pack_key())
    assert key[:2] == (2, 17) and key[3] == bytes(10) + b"\xff\xff" + pack_ip(CLIENT)
    value = dict(zip([n for n, _, _ in flow.VALUE_FIELDS], flow.VALUE.unpack(f.pack_value()), strict=True))
    assert value["method"] == method and value["ifindex"] == 2 and value["mtu"] == 1500
    assert value["new_daddr"][12:] == (conn.daddr if method in (Method.MASQ, Method.FULLNAT) else pack_ip(VIP))


def test_fullnat_toa_flow_is_marked_until_the_address_is_delivered():
    engine, event = established(Method.FULLNAT)
    conn = event.conn
    sub = engine.subscribe(services=False, conns=True)
    assert conn.in_flow.flags & flow.F_TOA and not conn.in_flow.flags & flow.F_ENGINE_ONLY  # the kernel may insert it
    assert not conn.out_flow.flags & (flow.F_ENGINE_ONLY | flow.F_TOA)
    laddr, lport = conn.laddr, int.from_bytes(conn.lport, "big")
    engine.process(frame(from_rs(RIPS[2], TCP(sport=8080, dport=lport, flags="SA"), dst="10.1.0.200")), 2, 1.1)
    assert laddr == pack_ip("10.1.0.200")
    engine.process(frame(from_client(TCP(sport=40000, dport=80, flags="A"))), 1, 1.2)
    assert not conn.in_flow.flags & (flow.F_ENGINE_ONLY | flow.F_TOA) and conn.slow is None
    assert ConnEventKind.FLOWS in [e.kind for e in sub if isinstance(e, ConnEvent)]


# -- the seams ----------------------------------------------------------------------------------

def imports_of(path: pathlib.Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
    return names


def test_no_forwarder_imports_the_engine():
    for path in (PYLVS / "engine" / "forward").glob("*.py"):
        assert "pylvs.engine.engine" not in imports_of(path), path


def test_no_module_outside_the_engine_assigns_an_engine_attribute():
    offenders = []
    for path in PYLVS.rglob("*.py"):
        if path.parent.name == "engine" or "engine" in path.relative_to(PYLVS).parts[:1]:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            targets = node.targets if isinstance(node, ast.Assign) else \
                [node.target] if isinstance(node, ast.AugAssign | ast.AnnAssign) else []
            for t in targets:
                if isinstance(t, ast.Attribute):
                    owner = t.value
                    name = owner.id if isinstance(owner, ast.Name) else getattr(owner, "attr", "")
                    # The engine and its connections (`conn`, as every module names a Conn; proto.py's
                    # decoded records are SyncConn values of its own, named `rec` by their users).
                    if name == "engine" or (name == "conn" and path.name != "proto.py"):
                        offenders.append(f"{path.relative_to(PYLVS)}:{node.lineno}")
    assert offenders == []


def test_a_round_creates_at_most_its_budget_of_connections_and_established_flows_go_on():
    engine = make_engine()
    engine.process(frame(from_client(TCP(sport=40000, dport=80, flags="S"))), 1, 1.0)
    engine.process(frame(from_rs("10.1.0.13", TCP(sport=8080, dport=40000, flags="SA"))), 2, 1.0)
    engine.start_round(new_conns=2)
    outs = [engine.process(frame(from_client(TCP(sport=41000 + i, dport=80, flags="S"))), 1, 1.1) for i in range(3)]
    assert [len(o) for o in outs] == [1, 1, 0] and engine.drops["new_conn_budget"] == 1
    (out_if, _), = engine.process(frame(from_client(TCP(sport=40000, dport=80, flags="A"))), 1, 1.1)
    assert out_if == 2 and len(engine.conns) == 3
    engine.start_round(new_conns=2)  # the next round: the client's retransmitted SYN gets through
    assert len(engine.process(frame(from_client(TCP(sport=41002, dport=80, flags="S"))), 1, 2.1)) == 1
