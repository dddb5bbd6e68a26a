"""Kernel scheduling (pylvs_sched.bpf.h, pylvs.datapath.bpf.ksched) on crafted SYNs (BPF_PROG_TEST_RUN).

The engine of the unit tests (tests/unit/director.py) publishes its mh, sh and dh services; the program
must pick, for many random clients, the real server the Python scheduler picks, with and without the
port and fallback flags, rewrite the SYN as the engine's recipe says (decoded by scapy), make both
entries in state SYN_RECV and report CREATED, which the engine adopts; everything the engine must
decide comes back unchanged. Needs root (BPF), so it lives with the integration tests.
"""

from __future__ import annotations

import random
import socket

import pytest
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import Ether

from pylvs.datapath.bpf.adopt import gue_source_port
from pylvs.datapath.bpf.events import SchedEvent
from pylvs.datapath.bpf.ksched import STATE, STATE_MAP, KernelScheduler
from pylvs.datapath.bpf.offload import FlowOffload, pack_key
from pylvs.engine import tcpstate
from pylvs.engine.flow import VALUE, VALUE_FIELDS
from pylvs.engine.services import Method, RealServer, VirtualService, pack_ip
from pylvs.ipvs_uapi import SVC_F_PERSISTENT, SVC_F_SCHED1, SVC_F_SCHED2
from pylvs.sched.base import Flow
from tests.integration.bpf_flows import DIP, TC_ACT_OK, TC_ACT_REDIRECT
from tests.unit.director import (
    CLIENT,
    CLIENT_MAC,
    DIP_MAC,
    RIPS,
    VIP,
    VIP_MAC,
    checksums_valid,
    from_client,
    from_rs,
    mac,
    make_engine,
    rs_mac,
)

CLIENTS = 300  # random clients per scheduler and flag combination
VALUE_FIELD = {name: i for i, (name, _, _) in enumerate(VALUE_FIELDS)}


@pytest.fixture
def published(fast):
    """(engine, publisher) for a service built by `build(engine)`; everything withdrawn afterwards."""
    made = []

    def publish(method=Method.MASQ, scheduler="mh", flags=0, rips=None):
        engine = make_engine(method, scheduler=scheduler, rips=rips)
        svc = engine.table.get(6, pack_ip(VIP), 80)
        if flags:
            engine.table.edit_service(VirtualService(6, svc.addr, 80, scheduler, flags=flags))
        ks = KernelScheduler(engine, fast)
        ks.publish()
        made.append(ks)
        return engine, svc, ks

    yield publish
    for ks in made:
        ks.close()
    fast.flows.clear()
    fast.events.read()


def syn(client: str = CLIENT, cport: int = 40000, **kw) -> Ether:
    return from_client(TCP(sport=cport, dport=80, flags="S", seq=1000, options=[("MSS", 1460)], **kw), src=client)


def random_client(rng: random.Random) -> tuple[str, int]:
    return socket.inet_ntoa(rng.getrandbits(32).to_bytes(4, "big")), rng.randrange(1024, 65536)


def python_choice(svc: VirtualService, client: str, cport: int) -> RealServer | None:
    return svc.sched.schedule(svc, Flow(6, pack_ip(client), cport, svc.addr, 80))


def punted_without_fallback(fast, svc: VirtualService, clients, make_syn) -> int:
    """The SYNs of `clients` ((address, port) pairs) to a service without the fallback flag: those the
    Python scheduler refuses come back unchanged (the engine answers them), the rest are forwarded. How
    many came back."""
    punted = 0
    for client, cport in clients:
        frame = bytes(make_syn(client, cport))
        verdict, out, _ = fast.test_run(frame)
        if python_choice(svc, client, cport) is None:
            assert verdict == TC_ACT_OK and out == frame
            punted += 1
        else:
            assert verdict == TC_ACT_REDIRECT
    return punted


def entry(fast, key: bytes) -> tuple:
    raw = fast.flows.lookup(pack_key(6, key))
    assert raw is not None, "no entry"
    return VALUE.unpack(raw)


@pytest.mark.parametrize("scheduler,flags", [("mh", 0), ("mh", SVC_F_SCHED2), ("sh", 0), ("sh", SVC_F_SCHED2),
                                             ("dh", 0)])
def test_the_kernel_picks_the_python_schedulers_real_server(fast, published, scheduler, flags):
    engine, svc, _ = published(scheduler=scheduler, flags=flags)
    rng = random.Random(f"{scheduler}{flags}")
    chosen = set()
    for _ in range(CLIENTS):
        client, cport = random_client(rng)
        want = python_choice(svc, client, cport)
        verdict, out, _ = fast.test_run(bytes(syn(client, cport)))
        assert verdict == TC_ACT_REDIRECT
        pkt = Ether(out)
        assert pkt[IP].dst == socket.inet_ntoa(want.addr), (client, cport)
        chosen.add(pkt[IP].dst)
    assert len(chosen) == (1 if scheduler == "dh" else len(RIPS))  # dh: one VIP, one real server


@pytest.mark.parametrize("scheduler", ["mh", "sh"])
def test_fallback_walks_as_the_kernel_and_without_it_the_engine_decides(fast, published, scheduler):
    engine, svc, ks = published(scheduler=scheduler, flags=SVC_F_SCHED1)
    quiesced = svc.dests[1]
    engine.table.edit_dest(svc, RealServer(quiesced.addr, quiesced.port, weight=0, method=Method.MASQ))
    ks.publish()
    rng = random.Random(scheduler)
    moved = 0
    for _ in range(CLIENTS):
        client, cport = random_client(rng)
        want = python_choice(svc, client, cport)
        verdict, out, _ = fast.test_run(bytes(syn(client, cport)))
        assert verdict == TC_ACT_REDIRECT and Ether(out)[IP].dst == socket.inet_ntoa(want.addr)
        moved += svc.sched.table.count(quiesced) and want is not quiesced
    # Without the flag, the clients of the quiesced server are refused by the engine (ICMP): punted here.
    engine.table.edit_service(VirtualService(6, svc.addr, 80, scheduler, flags=0))
    ks.publish()
    assert punted_without_fallback(fast, svc, (random_client(rng) for _ in range(CLIENTS)), syn) > CLIENTS // 10


def test_nat_syn_is_rewritten_and_both_entries_made(fast, published):
    engine, svc, ks = published()
    want = python_choice(svc, CLIENT, 40000)
    rip = socket.inet_ntoa(want.addr)
    verdict, out, _ = fast.test_run(bytes(syn()))
    assert verdict == TC_ACT_REDIRECT
    pkt = Ether(out)
    assert pkt.src == DIP_MAC and pkt.dst == rs_mac(rip)
    assert pkt[IP].src == CLIENT and pkt[IP].dst == rip and pkt[IP].ttl == 63
    assert pkt[TCP].sport == 40000 and pkt[TCP].dport == 8080 and pkt[TCP].flags == "S"
    assert pkt[TCP].seq == 1000 and pkt[TCP].options == [("MSS", 1460)]
    assert checksums_valid(pkt)
    key = pack_ip(CLIENT) + pack_ip(VIP) + (40000).to_bytes(2, "big") + (80).to_bytes(2, "big")
    inbound = entry(fast, key)
    assert inbound[VALUE_FIELD["tcp_state"]] == tcpstate.SYN_RECV and inbound[VALUE_FIELD["packets"]] == 1
    reply_key = want.addr + pack_ip(CLIENT) + (8080).to_bytes(2, "big") + (40000).to_bytes(2, "big")
    outbound = entry(fast, reply_key)
    assert outbound[VALUE_FIELD["tcp_state"]] == tcpstate.SYN_RECV
    assert outbound[VALUE_FIELD["dmac"]] == mac(CLIENT_MAC) and outbound[VALUE_FIELD["smac"]] == mac(VIP_MAC)
    (created,) = fast.events.read()  # it stands for the SYN's change too (NONE -> SYN_RECV)
    assert isinstance(created, SchedEvent) and created.key == key
    assert ks.resolve(created.slot, created.gen, created.dest) == (svc, want)
    # The real server's SYN+ACK goes back by the reply entry, its ACK completes the handshake here.
    synack = from_rs(rip, TCP(sport=8080, dport=40000, flags="SA", seq=5000, ack=1001))
    verdict, out, _ = fast.test_run(bytes(synack))
    assert verdict == TC_ACT_REDIRECT
    back = Ether(out)
    assert back[IP].src == VIP and back[TCP].sport == 80 and back.dst == CLIENT_MAC and checksums_valid(back)
    verdict, _, _ = fast.test_run(bytes(from_client(TCP(sport=40000, dport=80, flags="A", seq=1001, ack=5001))))
    assert verdict == TC_ACT_REDIRECT
    (established,) = fast.events.read()
    assert established.new_state == tcpstate.ESTABLISHED


def test_the_engine_adopts_what_the_kernel_scheduled(fast, published):
    engine, svc, ks = published()
    offload = FlowOffload(engine, fast.flows)
    offload.ksched = ks
    want = python_choice(svc, CLIENT, 40001)
    assert fast.test_run(bytes(syn(cport=40001)))[0] == TC_ACT_REDIRECT
    offload.apply(fast.events.read())
    key = pack_ip(CLIENT) + pack_ip(VIP) + (40001).to_bytes(2, "big") + (80).to_bytes(2, "big")
    conn, _ = engine.conns.lookup(6, key)
    assert conn.dest is want and conn.svc is svc and conn.state == tcpstate.SYN_RECV
    assert want.activeconns == 1 and want.inactconns == 0  # SYN_RECV counts as active
    assert svc.stats.conns == 1 and engine.total.conns == 1
    offload.refresh_all()
    assert svc.stats.inpkts == 1 and conn.in_pkts == 1  # the SYN, counted by the kernel
    assert fast.test_run(bytes(from_client(TCP(sport=40001, dport=80, flags="A", seq=1001, ack=1))))[0] \
        == TC_ACT_REDIRECT
    offload.apply(fast.events.read())
    assert conn.state == tcpstate.ESTABLISHED and want.activeconns == 1 and want.inactconns == 0
    assert offload.adopted == 1 and offload.refused == 0 and offload.rerouted == 0
    # A client whose next hop the engine does not know (yet): adopted, its entries stay (the program
    # answers where the SYN came from; withdrawn, the connection would stay in Python for good).
    other = "192.0.2.101"
    assert fast.test_run(bytes(syn(client=other, cport=40001)))[0] == TC_ACT_REDIRECT
    offload.apply(fast.events.read())
    key = pack_ip(other) + pack_ip(VIP) + (40001).to_bytes(2, "big") + (80).to_bytes(2, "big")
    assert engine.conns.lookup(6, key) is not None and offload.rerouted == 0
    assert fast.flows.lookup(pack_key(6, key)) is not None
    # One the engine routes elsewhere (another MAC than the SYN's sender): its entries go.
    moved = syn(cport=40002)
    moved[Ether].src = "02:00:00:00:66:66"
    assert fast.test_run(bytes(moved))[0] == TC_ACT_REDIRECT
    offload.apply(fast.events.read())
    key = pack_ip(CLIENT) + pack_ip(VIP) + (40002).to_bytes(2, "big") + (80).to_bytes(2, "big")
    assert engine.conns.lookup(6, key) is not None and offload.rerouted == 1
    assert fast.flows.lookup(pack_key(6, key)) is None
    offload.close()


@pytest.mark.parametrize("kind", ["threshold", "fullnat", "gue-csum", "gre-csum"])
def test_a_destination_the_kernel_cannot_reproduce_is_left_to_the_engine(fast, published, kind):
    engine, svc, ks = published(method=Method.TUNNEL if "csum" in kind else Method.MASQ)
    for d in list(svc.dests):
        new = {"threshold": RealServer(d.addr, d.port, method=Method.MASQ, u_threshold=100),
               "fullnat": RealServer(d.addr, d.port, method=Method.FULLNAT),  # (with TOA, the default)
               "gue-csum": RealServer(d.addr, d.port, method=Method.TUNNEL, tun_type="gue", tun_port=6080,
                                      tun_flags="csum"),
               "gre-csum": RealServer(d.addr, d.port, method=Method.TUNNEL, tun_type="gre", tun_flags="csum")}[kind]
        engine.table.edit_dest(svc, new)
    ks.publish()
    before = ks.counters.read()["punt_dest"]
    frame = bytes(syn(cport=40006))
    assert fast.test_run(frame)[:2] == (TC_ACT_OK, frame)
    assert ks.counters.read()["punt_dest"] == before + 1


def scheduled_syn(fast, published, method: Method) -> tuple[RealServer, Ether]:
    """The Python scheduler's choice for the default client, and the SYN as the program forwarded it."""
    _, svc, _ = published(method=method)
    want = python_choice(svc, CLIENT, 40000)
    verdict, out, _ = fast.test_run(bytes(syn()))
    assert verdict == TC_ACT_REDIRECT
    return want, Ether(out)


def test_dr_syn_keeps_addresses_and_changes_macs(fast, published):
    want, pkt = scheduled_syn(fast, published, Method.ROUTE)
    assert pkt.dst == rs_mac(socket.inet_ntoa(want.addr)) and pkt.src == DIP_MAC
    assert pkt[IP].src == CLIENT and pkt[IP].dst == VIP and pkt[TCP].dport == 80 and pkt[IP].ttl == 63
    assert checksums_valid(pkt)


def test_tun_syn_is_encapsulated_to_the_real_server(fast, published):
    want, pkt = scheduled_syn(fast, published, Method.TUNNEL)
    assert pkt[IP].proto == 4 and pkt[IP].src == DIP and pkt[IP].dst == socket.inet_ntoa(want.addr)
    inner = pkt[IP].payload
    assert inner.src == CLIENT and inner.dst == VIP and inner[TCP].flags == "S" and inner.ttl == 63


def test_gue_syn_is_encapsulated_with_the_source_port_the_engine_adopts(fast, published):
    """GUE's outer source port is per connection: the program hashes it (ks_gue_sport), and the engine's
    copy of the recipe, adopted from CREATED, must carry the same (gue_source_port)."""
    engine, svc, ks = published(method=Method.TUNNEL)
    for d in list(svc.dests):
        engine.table.edit_dest(svc, RealServer(d.addr, d.port, method=Method.TUNNEL, tun_type="gue", tun_port=6080))
    ks.publish()
    offload = FlowOffload(engine, fast.flows)
    offload.ksched = ks
    ports = set()
    for cport in (40100, 40101, 40102, 40103):
        want = python_choice(svc, CLIENT, cport)
        verdict, out, _ = fast.test_run(bytes(syn(cport=cport)))
        assert verdict == TC_ACT_REDIRECT
        pkt = Ether(out)
        assert pkt[IP].proto == 17 and pkt[IP].src == DIP and pkt[IP].dst == socket.inet_ntoa(want.addr)
        udp = pkt[UDP]
        assert udp.dport == 6080 and 32768 <= udp.sport <= 60999
        assert bytes(udp.payload)[:4] == bytes((0, 4, 0, 0))  # GUE version 0, IPv4 inside
        inner = IP(bytes(udp.payload)[4:])
        assert inner.src == CLIENT and inner.dst == VIP and inner[TCP].sport == cport and inner[TCP].flags == "S"
        assert udp.sport == gue_source_port(pack_ip(CLIENT), cport.to_bytes(2, "big"), (80).to_bytes(2, "big"))
        offload.apply(fast.events.read())
        key = pack_ip(CLIENT) + pack_ip(VIP) + cport.to_bytes(2, "big") + (80).to_bytes(2, "big")
        conn, _ = engine.conns.lookup(6, key)
        assert conn.dest is want and conn.in_flow.encap_sport == udp.sport
        mine = VALUE.unpack(conn.in_flow.pack_value())
        kernels = VALUE.unpack(fast.flows.lookup(conn.in_flow.pack_key()))
        for field in ("encap", "encap_sport", "encap_dport", "outer_saddr", "outer_daddr", "dmac", "smac", "ifindex"):
            assert mine[VALUE_FIELD[field]] == kernels[VALUE_FIELD[field]], field  # rewritten, it stays the same
        ports.add(udp.sport)
    assert len(ports) > 1  # per connection, not per real server
    assert offload.adopted == 4 and offload.refused == 0
    offload.close()


def test_what_the_engine_decides_comes_back_unchanged(fast, published):
    engine, svc, ks = published()
    frame = bytes(syn(cport=40002))
    assert fast.test_run(frame)[0] == TC_ACT_REDIRECT
    before = ks.counters.read()
    # The same SYN again: its entry exists (connection reuse is the engine's).
    assert fast.test_run(frame)[:2] == (TC_ACT_OK, frame)
    for bad in (from_client(TCP(sport=40003, dport=80, flags="SR")),
                from_client(TCP(sport=40003, dport=80, flags="S"), ttl=1)):
        assert fast.test_run(bytes(bad))[:2] == (TC_ACT_OK, bytes(bad))
    # A publication under way (generation 0), then a persistent service.
    ks._put(STATE_MAP, 0, STATE.pack(0, 0))
    assert fast.test_run(bytes(syn(cport=40004)))[:2] == (TC_ACT_OK, bytes(syn(cport=40004)))
    engine.table.edit_service(VirtualService(6, svc.addr, 80, "mh", flags=SVC_F_PERSISTENT, timeout=300))
    ks.publish()
    assert fast.test_run(bytes(syn(cport=40005)))[:2] == (TC_ACT_OK, bytes(syn(cport=40005)))
    after = ks.counters.read()
    assert after["punt_existing"] == before["punt_existing"] + 1
    assert after["punt_flags"] == before["punt_flags"] + 2
    assert after["punt_off"] == before["punt_off"] + 2  # no service left to schedule here: all off

