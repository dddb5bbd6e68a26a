"""Kernel scheduling of rr and wrr services (pylvs_sched.bpf.h's KSCHED_SEQ, pylvs.datapath.bpf.ksched)
on crafted SYNs (BPF_PROG_TEST_RUN).

The engine of the unit tests publishes its service; a twin engine of the same configuration, whose
scheduler made the same choices before, tells what the Python scheduler picks next. For several weight
sets (a gcd above 1, a weight-0 real server) a run of SYNs from distinct clients must go to exactly the
twin's sequence of real servers (the rewrites decoded by scapy), the CREATED events must carry the
cursor values in order, and once the engine adopted them its own scheduler must continue where the
kernel stopped. A stale generation and a sequence longer than the table are punted and counted; one
IPv6 case. Needs root (BPF), so it lives with the integration tests.
"""

from __future__ import annotations

import random
import socket

import pytest
from scapy.layers.inet import IP, TCP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether

from pylvs.datapath.bpf.events import SchedEvent
from pylvs.datapath.bpf.ksched import STATE, STATE_MAP, KernelScheduler
from pylvs.datapath.bpf.offload import FlowOffload
from pylvs.engine.engine import Engine
from pylvs.engine.services import Method, RealServer, VirtualService, pack_ip
from pylvs.sched.base import Flow
from tests.integration.bpf_flows import TC_ACT_OK, TC_ACT_REDIRECT
from tests.integration.test_bpf_ksched import random_client, syn
from tests.unit import test_engine_ipv6 as v6
from tests.unit.director import DIP_MAC, VIP, checksums_valid, make_engine, rs_mac

ANY_FLOW = Flow(6, pack_ip("198.51.100.1"), 1, pack_ip(VIP), 80)  # rr and wrr ignore the flow


@pytest.fixture
def publisher(fast):
    """publish(engine) -> the engine's KernelScheduler, published; everything withdrawn afterwards."""
    made = []

    def publish(engine: Engine) -> KernelScheduler:
        ks = KernelScheduler(engine, fast)
        ks.publish()
        made.append(ks)
        return ks

    yield publish
    for ks in made:
        ks.close()
    fast.flows.clear()
    fast.events.read()


def weighted(scheduler: str, weights: list[int], before: int) -> tuple[Engine, VirtualService]:
    """An IPv4 NAT service of RIPS with these weights whose scheduler already made `before` choices."""
    engine = make_engine(scheduler=scheduler)
    svc = engine.table.find(6, pack_ip(VIP), 80)
    for dest, weight in zip(list(svc.dests), weights, strict=True):
        engine.table.edit_dest(svc, RealServer(dest.addr, dest.port, weight=weight, method=Method.MASQ))
    for _ in range(before):
        svc.sched.schedule(svc, ANY_FLOW)
    return engine, svc


def next_picks(svc: VirtualService, n: int) -> list[str]:
    return [socket.inet_ntop(socket.AF_INET6 if len(svc.addr) == 16 else socket.AF_INET,
                             svc.sched.schedule(svc, ANY_FLOW).addr) for _ in range(n)]


def kernel_picks(fast, clients, ip=IP, make_syn=syn) -> list[str]:
    """The real servers the program sent the SYNs of `clients` to (each rewritten as NAT's recipe says)."""
    picks = []
    for client, cport in clients:
        verdict, out, _ = fast.test_run(bytes(make_syn(client, cport)))
        assert verdict == TC_ACT_REDIRECT, (client, cport)
        pkt = Ether(out)
        rip = pkt[ip].dst
        assert pkt[ip].src == client and pkt[TCP].sport == cport and pkt[TCP].dport == 8080
        assert pkt[TCP].flags == "S" and pkt.src == DIP_MAC
        if ip is IP:
            assert pkt.dst == rs_mac(rip) and checksums_valid(pkt)
        else:
            assert pkt.dst == v6.RS_MAC[rip] and v6.checksums_valid(pkt)
        picks.append(rip)
    return picks


@pytest.mark.parametrize("scheduler,weights,before", [
    ("rr", [1, 1, 1], 0), ("rr", [3, 1, 2], 2), ("rr", [1, 0, 5], 1),
    ("wrr", [4, 3, 2], 0), ("wrr", [4, 2, 6], 3), ("wrr", [3, 0, 1], 2), ("wrr", [5, 1, 1], 6),
    ("wrr", [10, 20, 30], 4)])
def test_the_kernel_continues_the_python_schedulers_sequence(fast, publisher, scheduler, weights, before):
    engine, svc = weighted(scheduler, weights, before)
    _, twin = weighted(scheduler, weights, before)
    ks = publisher(engine)
    created = ks.counters.read()["created"]
    usable = [w for w in weights if w]
    period = len(usable) if scheduler == "rr" else sum(usable) // svc.sched.di
    n = 2 * period + 3
    rng = random.Random(f"{scheduler}{weights}")
    clients = {random_client(rng) for _ in range(n)}
    while len(clients) < n:
        clients.add(random_client(rng))
    assert kernel_picks(fast, sorted(clients)) == next_picks(twin, n)
    assert ks.counters.read()["created"] == created + n
    # CREATED carries the cursor values in order; once adopted, the engine's scheduler continues after them.
    events = fast.events.read()
    assert [e.cursor for e in events if isinstance(e, SchedEvent)] == list(range(n))
    offload = FlowOffload(engine, fast.flows)
    offload.ksched = ks
    offload.apply(events)
    assert offload.adopted == n and svc.stats.conns == n
    assert next_picks(svc, 2 * period) == next_picks(twin, 2 * period)
    offload.close()


def test_a_stale_generation_is_punted_and_the_cursor_kept(fast, publisher):
    engine, svc = weighted("wrr", [2, 1, 1], 0)
    _, twin = weighted("wrr", [2, 1, 1], 0)
    ks = publisher(engine)
    assert kernel_picks(fast, [("198.51.100.1", 1000)]) == next_picks(twin, 1)
    before = ks.counters.read()
    ks._put(STATE_MAP, 0, STATE.pack(ks.gen + 1, 0))  # a publication the service's record is not from
    sent = bytes(syn("198.51.100.2", 1000))
    assert fast.test_run(sent)[:2] == (TC_ACT_OK, sent)
    assert ks.counters.read()["punt_stale"] == before["punt_stale"] + 1
    ks._put(STATE_MAP, 0, STATE.pack(ks.gen, 0))
    assert kernel_picks(fast, [("198.51.100.3", 1000), ("198.51.100.4", 1000)]) == next_picks(twin, 2)


def test_a_change_of_weights_republishes_from_the_python_schedulers_position(fast, publisher):
    engine, svc = weighted("rr", [1, 1, 1], 0)
    ks = publisher(engine)
    first, quiesced, last = (socket.inet_ntoa(d.addr) for d in svc.dests)
    assert kernel_picks(fast, [("198.51.100.1", 1000)]) == [first]
    offload = FlowOffload(engine, fast.flows)
    offload.ksched = ks
    offload.apply(fast.events.read())
    engine.table.edit_dest(svc, RealServer(pack_ip(quiesced), 8080, weight=0, method=Method.MASQ))
    ks.publish()
    clients = [(f"198.51.100.{i}", 1000) for i in range(2, 8)]
    assert kernel_picks(fast, clients) == [last, first] * 3
    offload.close()


def test_a_sequence_longer_than_the_table_is_the_engines(fast, publisher):
    engine, svc = weighted("wrr", [4000, 97, 0], 0)  # 4097 choices a period
    ks = publisher(engine)
    before = ks.counters.read()
    sent = bytes(syn("198.51.100.1", 1000))
    assert fast.test_run(sent)[:2] == (TC_ACT_OK, sent)
    after = ks.counters.read()
    assert after["punt_long"] == before["punt_long"] + 1 and after["created"] == before["created"]
    # One weight less and it fits.
    dest = svc.dests[0]
    engine.table.edit_dest(svc, RealServer(dest.addr, dest.port, weight=3999, method=Method.MASQ))
    ks.publish()
    assert fast.test_run(sent)[0] == TC_ACT_REDIRECT


def test_ipv6_wrr_continues_the_python_schedulers_sequence(fast, publisher):
    def build() -> tuple[Engine, VirtualService]:
        engine = v6.make_engine6()
        svc = engine.table.find(6, pack_ip(v6.VIP6), 80)
        engine.table.edit_service(VirtualService(6, svc.addr, 80, "wrr"))
        for dest, weight in zip(list(svc.dests), [6, 2, 4], strict=True):
            engine.table.edit_dest(svc, RealServer(dest.addr, dest.port, weight=weight, method=Method.MASQ))
        svc.sched.schedule(svc, ANY_FLOW)
        return engine, svc

    engine, svc = build()
    _, twin = build()
    publisher(engine)

    def syn6(client: str, cport: int) -> Ether:
        return v6.from_client(TCP(sport=cport, dport=80, flags="S", seq=1000), src=client)

    clients = [(f"2001:db8:c::{i:x}", 40000 + i) for i in range(1, 16)]
    assert kernel_picks(fast, clients, IPv6, syn6) == next_picks(twin, len(clients))


def test_no_usable_destination_is_the_engines(fast, publisher):
    engine, svc = weighted("rr", [0, 0, 0], 0)
    ks = publisher(engine)
    before = ks.counters.read()
    sent = bytes(syn("198.51.100.1", 1000))
    assert fast.test_run(sent)[:2] == (TC_ACT_OK, sent)
    assert ks.counters.read()["punt_no_dest"] == before["punt_no_dest"] + 1


def test_an_rr_service_with_a_destination_the_program_cannot_take_is_the_engines(fast, publisher):
    """A usable destination whose recipe is the engine's (here: no next hop known) would have its turns
    punted and taken again by the engine's own position, which the kernel's picks, read in batches, move
    meanwhile (the rotation skews): the whole service is the engine's until that destination goes."""
    engine, svc = weighted("rr", [1, 1, 1], 0)
    lost = engine.table.add_dest(svc, RealServer(pack_ip("10.9.0.1"), 8080, method=Method.MASQ))  # no route
    ks = publisher(engine)
    before = ks.counters.read()
    for i in range(4):
        sent = bytes(syn(f"198.51.100.{i + 1}", 1000))
        assert fast.test_run(sent)[:2] == (TC_ACT_OK, sent)
    after = ks.counters.read()
    # (the only service, so nothing at all is published: punt_off; beside others it would be punt_service)
    grown = {k: after[k] - before[k] for k in after if after[k] != before[k]}
    assert sum(grown.get(k, 0) for k in ("punt_off", "punt_service")) == 4 and "created" not in grown, grown
    engine.table.edit_dest(svc, RealServer(lost.addr, lost.port, weight=0, method=Method.MASQ))  # not usable
    ks.publish()
    sent = bytes(syn("198.51.100.9", 1000))
    assert fast.test_run(sent)[0] == TC_ACT_REDIRECT  # the three others: scheduled here again
