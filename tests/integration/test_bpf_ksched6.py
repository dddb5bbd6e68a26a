"""Kernel scheduling of IPv6 SYNs (pylvs_sched.bpf.h, pylvs.datapath.bpf.ksched) by BPF_PROG_TEST_RUN.

The IPv6 engine of the unit tests (tests/unit/test_engine_ipv6.py) publishes its mh, sh and dh services;
for hundreds of random IPv6 clients the program must pick the real server the Python scheduler picks
(the kernel folds an IPv6 address into 32 bits before hashing), with and without the port and fallback
flags; for NAT66, DR and IPv6-in-IPv6 / GRE tunnels the SYN it forwards must be the one the engine sends,
byte for byte (and decoded by scapy); the engine adopts the connection from the CREATED event. What
the IPv6 fast path leaves to the engine (GUE, tunnel checksums, FULLNAT6, extension headers) comes
back unchanged, counted. Needs root (BPF), so it lives with the integration tests.
"""

from __future__ import annotations

import random
import socket

import pytest
from scapy.layers.inet import TCP
from scapy.layers.inet6 import IPv6, IPv6ExtHdrDestOpt
from scapy.layers.l2 import GRE, Ether

from pylvs.datapath.bpf.events import SchedEvent
from pylvs.datapath.bpf.ksched import KernelScheduler
from pylvs.datapath.bpf.offload import FlowOffload, pack_key
from pylvs.engine import tcpstate
from pylvs.engine.engine import Engine
from pylvs.engine.services import Method, RealServer, VirtualService, pack_ip
from pylvs.ipvs_uapi import SVC_F_SCHED1, SVC_F_SCHED2
from pylvs.packet import vnet
from tests.integration.bpf_flows import TC_ACT_OK, TC_ACT_REDIRECT
from tests.integration.test_bpf_ksched import VALUE_FIELD, entry, punted_without_fallback, python_choice
from tests.unit.director import CLIENT_MAC, DIP_MAC, VIP_MAC, mac
from tests.unit.test_engine_ipv6 import (
    CLIENT6,
    DIP6,
    RIPS6,
    RS_MAC,
    VIP6,
    checksums_valid,
    frame,
    from_client,
    from_rs,
    make_engine6,
)

CLIENTS = 300  # random clients per scheduler and flag combination
DH_VIPS = 64   # dh hashes the VIP: that many services, one per VIP


def make_engine(method: Method = Method.MASQ, scheduler: str = "mh", flags: int = 0, tun_type: str = "ipip") -> Engine:
    engine = make_engine6(method=method)
    svc = engine.table.find(6, pack_ip(VIP6), 80)
    engine.table.edit_service(VirtualService(6, svc.addr, 80, scheduler, flags=flags))
    for dest in svc.dests:
        dest.tun_type = tun_type
    return engine


@pytest.fixture
def published(fast):
    """publish(engine) -> (service, publisher); everything withdrawn afterwards."""
    made = []

    def publish(engine: Engine):
        ks = KernelScheduler(engine, fast)
        ks.publish()
        made.append(ks)
        return engine.table.find(6, pack_ip(VIP6), 80), ks

    yield publish
    for ks in made:
        ks.close()
    fast.flows.clear()
    fast.events.read()


def syn(client: str = CLIENT6, cport: int = 40000, vip: str = VIP6, **kw) -> Ether:
    return from_client(TCP(sport=cport, dport=80, flags="S", seq=1000, options=[("MSS", 1440)]), src=client,
                       dst=vip, **kw)


def random_client(rng: random.Random) -> tuple[str, int]:
    return socket.inet_ntop(socket.AF_INET6, rng.getrandbits(128).to_bytes(16, "big")), rng.randrange(1024, 65536)


def conn_key(client: str, cport: int, vip: str = VIP6) -> bytes:
    return pack_ip(client) + pack_ip(vip) + cport.to_bytes(2, "big") + (80).to_bytes(2, "big")


def engine_sends(method: Method, pkt: Ether, tun_type: str = "ipip") -> bytes:
    """The frame a fresh engine of the same configuration sends for `pkt`."""
    ((_, out),) = make_engine(method, tun_type=tun_type).process(frame(pkt), 1, 0.0)
    return bytes(out)[vnet.VNET_HDR_LEN:]


@pytest.mark.parametrize("scheduler,flags", [("mh", 0), ("mh", SVC_F_SCHED2), ("sh", 0), ("sh", SVC_F_SCHED2)])
def test_the_kernel_picks_the_python_schedulers_real_server(fast, published, scheduler, flags):
    svc, ks = published(make_engine(scheduler=scheduler, flags=flags))
    created = ks.counters.read()["created"]
    rng = random.Random(f"v6{scheduler}{flags}")
    chosen = set()
    for _ in range(CLIENTS):
        client, cport = random_client(rng)
        want = python_choice(svc, client, cport)
        verdict, out, _ = fast.test_run(bytes(syn(client, cport)))
        assert verdict == TC_ACT_REDIRECT, (client, cport)
        dst = Ether(out)[IPv6].dst
        assert dst == socket.inet_ntop(socket.AF_INET6, want.addr), (client, cport)
        chosen.add(dst)
    assert len(chosen) == len(RIPS6)
    assert ks.counters.read()["created"] == created + CLIENTS


def test_dh_hashes_the_folded_vip_as_the_python_scheduler(fast, published):
    engine = make_engine(scheduler="dh")
    vips = [f"2001:db8:f:{i:x}:{i * 31:x}::{i * 7919 % 0xffff:x}" for i in range(1, DH_VIPS + 1)]
    for vip in vips:
        svc = engine.table.add_service(VirtualService(6, pack_ip(vip), 80, "dh"))
        for rip in RIPS6:
            engine.table.add_dest(svc, RealServer(pack_ip(rip), 8080, method=Method.MASQ))
    published(engine)
    rng = random.Random("dh6")
    chosen = set()
    for vip in vips:
        svc = engine.table.find(6, pack_ip(vip), 80)
        for _ in range(3):  # the client does not matter to dh
            client, cport = random_client(rng)
            want = python_choice(svc, client, cport)
            verdict, out, _ = fast.test_run(bytes(syn(client, cport, vip=vip)))
            assert verdict == TC_ACT_REDIRECT
            assert Ether(out)[IPv6].dst == socket.inet_ntop(socket.AF_INET6, want.addr), vip
            chosen.add(want.addr)
    assert len(chosen) == len(RIPS6)


@pytest.mark.parametrize("scheduler", ["mh", "sh"])
def test_fallback_walks_as_the_kernel_and_without_it_the_engine_decides(fast, published, scheduler):
    engine = make_engine(scheduler=scheduler, flags=SVC_F_SCHED1)
    svc = engine.table.find(6, pack_ip(VIP6), 80)
    quiesced = svc.dests[1]
    engine.table.edit_dest(svc, RealServer(quiesced.addr, quiesced.port, weight=0, method=Method.MASQ))
    svc, ks = published(engine)
    rng = random.Random(f"v6{scheduler}")
    for _ in range(CLIENTS):
        client, cport = random_client(rng)
        want = python_choice(svc, client, cport)
        verdict, out, _ = fast.test_run(bytes(syn(client, cport)))
        assert verdict == TC_ACT_REDIRECT and Ether(out)[IPv6].dst == socket.inet_ntop(socket.AF_INET6, want.addr)
    # Without the flag, the clients of the quiesced server are refused by the engine: punted here.
    engine.table.edit_service(VirtualService(6, svc.addr, 80, scheduler, flags=0))
    ks.publish()
    clients = (random_client(rng) for _ in range(CLIENTS))
    assert punted_without_fallback(fast, svc, clients, syn) > CLIENTS // 10  # a third hash to the quiesced one


def test_nat66_syn_is_the_engines_and_both_entries_are_made(fast, published):
    svc, ks = published(make_engine())
    want = python_choice(svc, CLIENT6, 40000)
    rip = socket.inet_ntop(socket.AF_INET6, want.addr)
    sent = syn(hlim=64)
    verdict, out, _ = fast.test_run(bytes(sent))
    assert verdict == TC_ACT_REDIRECT
    assert out == engine_sends(Method.MASQ, sent)
    pkt = Ether(out)
    assert (pkt.src, pkt.dst) == (DIP_MAC, RS_MAC[rip])
    assert (pkt[IPv6].src, pkt[IPv6].dst, pkt[IPv6].hlim) == (CLIENT6, rip, 63)
    assert (pkt[TCP].sport, pkt[TCP].dport, str(pkt[TCP].flags), pkt[TCP].seq) == (40000, 8080, "S", 1000)
    assert pkt[TCP].options == [("MSS", 1440)] and checksums_valid(pkt)
    key = conn_key(CLIENT6, 40000)
    inbound = entry(fast, key)
    assert inbound[VALUE_FIELD["tcp_state"]] == tcpstate.SYN_RECV and inbound[VALUE_FIELD["packets"]] == 1
    reply_key = want.addr + pack_ip(CLIENT6) + (8080).to_bytes(2, "big") + (40000).to_bytes(2, "big")
    outbound = entry(fast, reply_key)
    assert outbound[VALUE_FIELD["tcp_state"]] == tcpstate.SYN_RECV
    assert outbound[VALUE_FIELD["dmac"]] == mac(CLIENT_MAC) and outbound[VALUE_FIELD["smac"]] == mac(VIP_MAC)
    (created,) = fast.events.read()
    assert isinstance(created, SchedEvent) and created.key == key
    assert (created.raddr, created.rport) == (want.addr, (8080).to_bytes(2, "big"))
    assert ks.resolve(created.slot, created.gen, created.dest) == (svc, want)
    # The SYN+ACK goes back by the reply entry; the client's ACK completes the handshake here.
    verdict, out, _ = fast.test_run(bytes(from_rs(rip, TCP(sport=8080, dport=40000, flags="SA", seq=5000, ack=1001))))
    assert verdict == TC_ACT_REDIRECT
    back = Ether(out)
    assert (back.src, back.dst) == (VIP_MAC, CLIENT_MAC)
    assert (back[IPv6].src, back[IPv6].dst, back[TCP].sport, back[TCP].dport) == (VIP6, CLIENT6, 80, 40000)
    assert checksums_valid(back)
    ack = from_client(TCP(sport=40000, dport=80, flags="A", seq=1001, ack=5001))
    assert fast.test_run(bytes(ack))[0] == TC_ACT_REDIRECT
    (established,) = fast.events.read()
    assert established.new_state == tcpstate.ESTABLISHED and established.key == key


def test_dr6_syn_keeps_addresses_and_changes_macs(fast, published):
    svc, _ = published(make_engine(Method.ROUTE))
    want = python_choice(svc, CLIENT6, 40000)
    sent = syn(hlim=9)
    verdict, out, _ = fast.test_run(bytes(sent))
    assert verdict == TC_ACT_REDIRECT and out == engine_sends(Method.ROUTE, sent)
    pkt = Ether(out)
    assert (pkt.src, pkt.dst) == (DIP_MAC, RS_MAC[socket.inet_ntop(socket.AF_INET6, want.addr)])
    assert (pkt[IPv6].src, pkt[IPv6].dst, pkt[IPv6].hlim, pkt[TCP].dport) == (CLIENT6, VIP6, 8, 80)
    assert checksums_valid(pkt)


@pytest.mark.parametrize("tun_type", ["ipip", "gre"])
def test_tun6_syn_is_encapsulated_to_the_real_server(fast, published, tun_type):
    svc, _ = published(make_engine(Method.TUNNEL, tun_type=tun_type))
    want = python_choice(svc, CLIENT6, 40000)
    rip = socket.inet_ntop(socket.AF_INET6, want.addr)
    sent = syn()
    verdict, out, _ = fast.test_run(bytes(sent))
    assert verdict == TC_ACT_REDIRECT and out == engine_sends(Method.TUNNEL, sent, tun_type)
    pkt = Ether(out)
    outer = pkt[IPv6]
    assert (pkt.dst, outer.src, outer.dst, outer.nh) == (RS_MAC[rip], DIP6, rip, 41 if tun_type == "ipip" else 47)
    inner = pkt[GRE].payload if tun_type == "gre" else outer.payload
    assert (inner.src, inner.dst, inner.hlim, str(inner[TCP].flags)) == (CLIENT6, VIP6, 63, "S")


def test_the_engine_adopts_what_the_kernel_scheduled(fast, published):
    engine = make_engine()
    svc, ks = published(engine)
    offload = FlowOffload(engine, fast.flows)
    offload.ksched = ks
    want = python_choice(svc, CLIENT6, 40001)
    assert fast.test_run(bytes(syn(cport=40001)))[0] == TC_ACT_REDIRECT
    offload.apply(fast.events.read())
    conn, _ = engine.conns.lookup(6, conn_key(CLIENT6, 40001))
    assert conn.dest is want and conn.svc is svc and conn.state == tcpstate.SYN_RECV
    assert (conn.caddr, conn.vaddr, conn.daddr) == (pack_ip(CLIENT6), pack_ip(VIP6), want.addr)
    assert want.activeconns == 1 and svc.stats.conns == 1 and engine.total.conns == 1
    assert offload.adopted == 1 and offload.refused == 0 and offload.rerouted == 0
    offload.refresh_all()
    assert svc.stats.inpkts == 1 and conn.in_pkts == 1  # the SYN, counted by the kernel
    rip = socket.inet_ntop(socket.AF_INET6, want.addr)
    assert fast.test_run(bytes(from_rs(rip, TCP(sport=8080, dport=40001, flags="SA", seq=9, ack=1001))))[0] \
        == TC_ACT_REDIRECT
    assert fast.test_run(bytes(from_client(TCP(sport=40001, dport=80, flags="A", seq=1001, ack=10))))[0] \
        == TC_ACT_REDIRECT
    offload.apply(fast.events.read())
    assert conn.state == tcpstate.ESTABLISHED and offload.mismatches == 0
    # A CREATED the engine cannot place (its publication forgotten): both entries are withdrawn.
    ks._history.clear()
    assert fast.test_run(bytes(syn(cport=40002)))[0] == TC_ACT_REDIRECT
    offload.apply(fast.events.read())
    assert offload.refused == 1 and engine.conns.lookup(6, conn_key(CLIENT6, 40002)) is None
    assert fast.flows.lookup(pack_key(6, conn_key(CLIENT6, 40002))) is None
    reply_key = want.addr + pack_ip(CLIENT6) + (8080).to_bytes(2, "big") + (40002).to_bytes(2, "big")
    assert fast.flows.lookup(pack_key(6, reply_key)) is None
    offload.close()


@pytest.mark.parametrize("kind", ["gue", "gre-csum", "fullnat", "threshold"])
def test_what_the_ipv6_fast_path_leaves_to_the_engine_is_punted(fast, published, kind):
    engine = make_engine(Method.MASQ if kind == "threshold" else Method.TUNNEL)
    svc = engine.table.find(6, pack_ip(VIP6), 80)
    for d in list(svc.dests):
        new = {"gue": RealServer(d.addr, d.port, method=Method.TUNNEL, tun_type="gue", tun_port=6080),
               "gre-csum": RealServer(d.addr, d.port, method=Method.TUNNEL, tun_type="gre", tun_flags="csum"),
               "fullnat": RealServer(d.addr, d.port, method=Method.FULLNAT),
               "threshold": RealServer(d.addr, d.port, method=Method.MASQ, u_threshold=100)}[kind]
        engine.table.edit_dest(svc, new)
    _, ks = published(engine)
    before = ks.counters.read()["punt_dest"]
    sent = bytes(syn(cport=40006))
    assert fast.test_run(sent)[:2] == (TC_ACT_OK, sent)
    assert ks.counters.read()["punt_dest"] == before + 1
    assert fast.flows.lookup(pack_key(6, conn_key(CLIENT6, 40006))) is None


def test_what_the_engine_decides_comes_back_unchanged(fast, published):
    engine = make_engine()
    other = engine.table.add_service(VirtualService(6, pack_ip("2001:db8:f::2"), 80, "lc"))
    engine.table.add_dest(other, RealServer(pack_ip(RIPS6[0]), 8080, method=Method.MASQ))
    _, ks = published(engine)
    sent = bytes(syn(cport=40010))
    assert fast.test_run(sent)[0] == TC_ACT_REDIRECT
    before, fp_before = ks.counters.read(), fast.counters.read()

    def punted(pkt: bytes) -> None:
        assert fast.test_run(pkt)[:2] == (TC_ACT_OK, pkt)

    punted(sent)  # its entry exists: connection reuse is the engine's
    punted(bytes(syn(cport=40011, hlim=1)))
    punted(bytes(from_client(TCP(sport=40012, dport=80, flags="SF"))))
    punted(bytes(syn(cport=40013, vip="2001:db8:f::2")))  # lc: the engine's
    punted(bytes(syn(cport=40014, vip="2001:db8:f::3")))  # no service
    punted(bytes(from_client(TCP(sport=40015, dport=80, flags="S"), ext=IPv6ExtHdrDestOpt())))
    after, fp_after = ks.counters.read(), fast.counters.read()
    grown = {k: after[k] - before[k] for k in after if after[k] != before[k]}
    assert grown == {"punt_existing": 1, "punt_flags": 2, "punt_service": 1, "punt_no_service": 1}, grown
    assert fp_after["punt_ext_header"] == fp_before["punt_ext_header"] + 1  # before scheduling is asked
    assert fp_after["punt_tcp_flags"] == fp_before["punt_tcp_flags"] + 5
