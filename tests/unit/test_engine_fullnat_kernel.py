"""The engine's side of FULLNAT connections the kernel fast path schedules (pylvs_sched.bpf.h ks_claim):
adopted at the local address and port the program took, the port ranges of the two kept apart, and
and the recipes the kernel's from the SYN on (with TOA, the request recipe marked F_TOA)."""

from __future__ import annotations

from scapy.layers.inet import IP, TCP

from pylvs.engine import tcpstate
from pylvs.engine.engine import Engine, Settings
from pylvs.engine.flow import DIR_IN, DIR_OUT, F_ENGINE_ONLY, F_TOA
from pylvs.engine.forward.fullnat import LPORT_MIN
from pylvs.engine.hops import StaticRoutes
from pylvs.engine.services import Method, pack_ip
from pylvs.sync.master import SyncMaster
from tests.unit.director import CLIENT, VIP, frame, from_client, parse
from tests.unit.test_engine_fullnat import LIPS, fullnat_engine

PORT = (40000).to_bytes(2, "big")
VPORT = (80).to_bytes(2, "big")
RPORT = (8080).to_bytes(2, "big")


def key(cport: bytes = PORT, client: str = CLIENT) -> bytes:
    return pack_ip(client) + pack_ip(VIP) + cport + VPORT


def adopt(e: Engine, lip: str, lport: int, cport: bytes = PORT, dest: int = 0):
    svc = next(iter(e.table))
    return e.adopt_kernel(svc, svc.dests[dest], key(cport), 0.0, local=(pack_ip(lip), lport.to_bytes(2, "big")))


def test_a_kernel_made_connection_is_bound_where_the_kernel_took_its_local_port():
    e = fullnat_engine()
    svc = next(iter(e.table))
    conn = adopt(e, LIPS[1], 50001)
    local = svc.laddrs[1]
    assert conn is not None and conn.state == tcpstate.SYN_RECV and conn.dest.method == Method.FULLNAT
    assert (conn.laddr, conn.lport, conn.local) == (pack_ip(LIPS[1]), (50001).to_bytes(2, "big"), local)
    assert conn.out_key == svc.dests[0].addr + pack_ip(LIPS[1]) + RPORT + (50001).to_bytes(2, "big")
    assert e.conns.lookup(6, conn.out_key) == (conn, DIR_OUT) and e.conns.lookup(6, key()) == (conn, DIR_IN)
    assert local.conns == 1 and svc.laddrs[0].conns == 0 and svc.stats.conns == 1
    assert conn.in_flow.addrs == pack_ip(LIPS[1]) + svc.dests[0].addr
    e._expire(conn)
    assert local.conns == 0 and e.conns.lookup(6, conn.out_key) is None


def test_a_reply_tuple_held_by_a_live_connection_is_refused_one_done_is_replaced():
    e = fullnat_engine()
    first = adopt(e, LIPS[0], 50002)
    assert adopt(e, LIPS[0], 50002, cport=(40001).to_bytes(2, "big")) is None  # established or not, alive
    assert first.local.conns == 1
    first.state = tcpstate.TIME_WAIT  # the program took its entries out with the last segment
    second = adopt(e, LIPS[0], 50002, cport=(40001).to_bytes(2, "big"))
    assert second is not None and first.dead and e.conns.lookup(6, second.out_key) == (second, DIR_OUT)
    assert second.local.conns == 1


def test_a_local_address_the_service_does_not_have_is_refused():
    e = fullnat_engine()
    assert adopt(e, "10.1.0.250", 50003) is None
    assert all(la.conns == 0 for la in next(iter(e.table)).laddrs) and len(e.conns) == 0


def test_the_engines_allocator_skips_a_port_the_other_data_path_holds():
    e = fullnat_engine(lips=LIPS[:1])
    held = {LPORT_MIN + 2}
    claimed = []

    def claim(conn, out_key):
        port = int.from_bytes(out_key[-2:], "big")
        if port in held:
            return False
        claimed.append((conn, port))
        return True

    for f in e.fullnat_forwarders():
        f.claim = claim
    ports = []
    for i in range(3):
        _, buf = e.process(frame(from_client(TCP(sport=41000 + i, dport=80, flags="S"))), 1, 0)[0]
        ports.append(parse(buf)[TCP].sport)
    assert ports == [LPORT_MIN + 1, LPORT_MIN + 3, LPORT_MIN + 4]  # the held one skipped
    assert [p for _, p in claimed] == ports and next(iter(e.table)).laddrs[0].conflicts == 1
    assert len(e.fullnat_forwarders()) == 4  # FULLNAT, FULLNAT6, NAT64, NAT46: all take local ports


def test_without_toa_the_recipes_are_the_kernels_from_the_syn_on():
    assert not any(f.toa for f in Engine(StaticRoutes({}), Settings(fullnat_toa=False)).fullnat_forwarders())
    assert all(f.toa for f in Engine(StaticRoutes({})).fullnat_forwarders())
    conns = []
    for toa in (False, True):
        e = fullnat_engine()
        for f in e.fullnat_forwarders():
            f.toa = toa
        _, buf = e.process(frame(from_client(TCP(sport=42000, dport=80, flags="S"))), 1, 0)[0]
        assert parse(buf)[IP].src == LIPS[0]
        conns.append(e.conns.lookup(6, key((42000).to_bytes(2, "big")))[0])
    plain, toa = conns
    assert plain.slow is None and not plain.in_flow.flags & F_ENGINE_ONLY
    assert toa.slow is not None and toa.in_flow.flags & F_TOA and not toa.in_flow.flags & F_ENGINE_ONLY


def test_sync_skips_a_kernel_made_connection_as_an_engine_made_one():
    e = fullnat_engine()
    sent: list[bytes] = []
    master = SyncMaster(sent.append, syncid=4)
    events = e.subscribe(services=False, conns=True, packets=True)
    conn = adopt(e, LIPS[0], 50004)
    e.tcp_transition(conn.out_key, 0x12, 0.1)  # the SYN+ACK and the ACK the kernel forwarded
    e.tcp_transition(conn.in_key, 0x10, 0.2)
    assert conn.state == tcpstate.ESTABLISHED
    e.account(conn, DIR_IN, 3, 300, 0.3)  # its packets counted there: due for sync, as in the kernel
    master.follow(events)
    master.flush()
    assert sent == [] and master.stats["skipped_fullnat"] >= 1
