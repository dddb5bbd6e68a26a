"""The fast path's map writer follows the engine's events (a fake map stands for the kernel's)."""

from __future__ import annotations

from scapy.layers.inet import TCP, UDP

from pylvs.datapath.bpf.offload import OFFLOAD_DELAY, FlowOffload
from pylvs.engine import tcpstate
from pylvs.engine.services import Method, pack_ip
from tests.unit.director import RIPS, frame, from_client, from_rs, make_engine


class FakeFlowMap:
    """What FlowMap offers, over a dict; `forward()` plays the kernel forwarding packets of an entry."""

    def __init__(self) -> None:
        self.entries: dict[bytes, list[int]] = {}

    def put(self, entry) -> None:
        self.entries[entry.pack_key()] = [entry.packets, entry.bytes, entry.last_seen_ns]

    def delete(self, entry) -> bool:
        return self.entries.pop(entry.pack_key(), None) is not None

    def refresh(self, entry) -> bool:
        counts = self.entries.get(entry.pack_key())
        if counts is None:
            return False
        entry.packets, entry.bytes, entry.last_seen_ns = counts
        return True

    def forward(self, entry, packets: int, nbytes: int, at: float) -> None:
        counts = self.entries[entry.pack_key()]
        counts[0] += packets
        counts[1] += nbytes
        counts[2] = int(at * 1e9)


def tcp_established(method=Method.MASQ):
    engine = make_engine(method=method)
    if method == Method.FULLNAT:
        engine.table.add_laddr(next(iter(engine.table)), pack_ip("10.1.0.200"))
    fake = FakeFlowMap()
    offload = FlowOffload(engine, fake)
    engine.process(frame(from_client(TCP(sport=40000, dport=80, flags="S"))), 1, 1.0)
    conn = engine.conns.conns()[0]
    dst = "10.1.0.200" if method == Method.FULLNAT else "192.0.2.100"
    dport = int.from_bytes(conn.lport, "big") if method == Method.FULLNAT else 40000
    engine.process(frame(from_rs(RIPS[2], TCP(sport=8080, dport=dport, flags="SA"), dst=dst)), 2, 1.1)
    offload.drain(0.0)
    assert fake.entries == {}  # SYN_RECV: not yet
    engine.process(frame(from_client(TCP(sport=40000, dport=80, flags="A"))), 1, 1.2)
    offload.drain(0.0)
    assert fake.entries == {}  # written on the next tick, not at the event
    offload.refresh(1.0)
    return engine, fake, offload, conn


def test_tcp_flows_enter_the_map_when_established_and_leave_on_fin():
    engine, fake, offload, conn = tcp_established()
    assert set(fake.entries) == {conn.in_flow.pack_key(), conn.out_flow.pack_key()} and len(offload) == 1
    engine.process(frame(from_client(TCP(sport=40000, dport=80, flags="FA"))), 1, 1.3)
    offload.drain(0.0)
    assert fake.entries == {} and len(offload) == 0


def test_kernel_counts_become_engine_statistics_and_keep_the_connection():
    engine, fake, offload, conn = tcp_established()
    svc = conn.svc
    inpkts, outbytes = svc.stats.inpkts, svc.stats.outbytes
    timeout = engine.settings.tcp_timeouts[tcpstate.ESTABLISHED]
    fake.forward(conn.in_flow, 10, 1000, at=500.0)
    fake.forward(conn.out_flow, 20, 30000, at=500.0)
    offload.refresh(1.0)
    assert (svc.stats.inpkts, svc.stats.outbytes) == (inpkts + 10, outbytes + 30000)
    assert conn.in_pkts == 12 and conn.expires == 500.0 + timeout
    offload.refresh(1.0)  # nothing new: nothing counted twice
    assert svc.stats.inpkts == inpkts + 10
    engine.tick(1.2 + timeout + 1)  # past the engine's own view, not past the kernel's last packet
    assert not conn.dead
    engine.tick(500.0 + timeout + 1)
    assert conn.dead
    offload.drain(0.0)
    assert fake.entries == {}


def test_counts_are_read_before_the_recipes_are_withdrawn():
    engine, fake, offload, conn = tcp_established()
    fake.forward(conn.in_flow, 5, 500, at=2.0)
    engine.process(frame(from_client(TCP(sport=40000, dport=80, flags="R"))), 1, 2.1)
    offload.drain(0.0)
    assert conn.in_pkts == 2 + 5 + 1 and fake.entries == {}


def test_udp_flows_enter_at_creation():
    engine = make_engine(proto=17)
    fake = FakeFlowMap()
    offload = FlowOffload(engine, fake)
    engine.process(frame(from_client(UDP(sport=40000, dport=80))), 1, 1.0)
    offload.drain(0.0)
    offload.refresh(1.0)
    (conn,) = engine.conns.conns()
    assert set(fake.entries) == {conn.in_flow.pack_key()}  # the reply's next hop is not known yet
    engine.process(frame(from_rs(RIPS[2], UDP(sport=8080, dport=40000))), 2, 1.1)
    offload.refresh(1.0)
    assert set(fake.entries) == {conn.in_flow.pack_key(), conn.out_flow.pack_key()}


def test_a_connection_shorter_than_a_tick_never_touches_the_map():
    engine = make_engine()
    fake = FakeFlowMap()
    writes = []
    fake.put = writes.append  # type: ignore[method-assign]
    offload = FlowOffload(engine, fake)
    for flags, rs in (("S", False), ("SA", True), ("A", False), ("FA", False)):
        if rs:
            engine.process(frame(from_rs(RIPS[2], TCP(sport=8080, dport=40000, flags=flags))), 2, 1.0)
        else:
            engine.process(frame(from_client(TCP(sport=40000, dport=80, flags=flags))), 1, 1.0)
        offload.drain(0.0)
    offload.refresh(1.0)
    assert writes == [] and len(offload) == 0


def test_fullnat_waits_for_the_client_address_to_be_delivered():
    engine, fake, offload, conn = tcp_established(Method.FULLNAT)
    # The client's ACK carried the TOA: from then on its direction may go to the kernel too.
    assert set(fake.entries) == {conn.in_flow.pack_key(), conn.out_flow.pack_key()}


def test_a_flow_without_a_resolved_hop_waits_for_the_next_refresh():
    engine = make_engine(proto=17)
    fake = FakeFlowMap()
    offload = FlowOffload(engine, fake)
    routes = engine.routes
    saved = dict(routes.hops)
    routes.hops.clear()  # no neighbour known yet: the frame is parked
    engine.process(frame(from_client(UDP(sport=40000, dport=80))), 1, 1.0)
    offload.drain(0.0)
    offload.refresh(1.0)
    assert fake.entries == {} and engine.egress.parked
    routes.hops.update(saved)
    (conn,) = engine.conns.conns()
    conn.in_flow.hop = routes.hop(conn.daddr)
    conn.out_flow.hop = routes.hop(conn.caddr)
    offload.refresh(1.0)
    assert len(fake.entries) == 2


def test_recipes_go_to_the_kernel_once_the_delay_has_passed_without_waiting_for_a_tick():
    engine = make_engine(proto=17)
    fake = FakeFlowMap()
    offload = FlowOffload(engine, fake)
    engine.process(frame(from_client(UDP(sport=40000, dport=80))), 1, 1.0)
    offload.drain(1.0)
    assert fake.entries == {}
    offload.drain(1.0 + OFFLOAD_DELAY)
    (conn,) = engine.conns.conns()
    assert set(fake.entries) == {conn.in_flow.pack_key()}
