"""The fast path's map writer follows the engine's events (a fake map stands for the kernel's)."""

from __future__ import annotations

from scapy.layers.inet import TCP, UDP

from pylvs.datapath.bpf.events import FlowEvent, RetiredEvent
from pylvs.datapath.bpf.offload import EMBRYONIC_SHARE, OFFLOAD_DELAY, FlowOffload
from pylvs.engine import tcpstate
from pylvs.engine.events import ConnEventKind
from pylvs.engine.flow import DIR_IN, DIR_OUT
from pylvs.engine.services import Method, pack_ip
from pylvs.ipvs_uapi import AF_INET, AF_INET6
from pylvs.packet.layout import TCP_ACK, TCP_FIN, TCP_RST
from tests.unit.director import RIPS, frame, from_client, from_rs, make_engine
from tests.unit.test_engine_ipv6 import RIPS6, make_engine6
from tests.unit.test_engine_ipv6 import from_client as from_client6
from tests.unit.test_engine_ipv6 import from_rs as from_rs6


class FakeFlowMap:
    """What FlowMap offers, over a dict; `forward()` plays the kernel forwarding packets of an entry."""

    def __init__(self) -> None:
        self.entries: dict[bytes, list[int]] = {}
        self.states: dict[bytes, int] = {}  # tcp_state as written

    def put(self, entry) -> None:
        self.entries[entry.pack_key()] = [entry.packets, entry.bytes, entry.last_seen_ns]
        self.states[entry.pack_key()] = entry.tcp_state

    def put_new(self, key: bytes, value: bytes) -> bool:
        if key in self.entries:
            return False
        self.entries[key] = [0, 0, 0]  # (a FULLNAT claim's placeholder: no state)
        return True

    def delete_key(self, key: bytes) -> bool:
        return self.entries.pop(key, None) is not None

    def delete(self, entry) -> bool:
        return self.entries.pop(entry.pack_key(), None) is not None

    def refresh(self, entry) -> bool:
        counts = self.entries.get(entry.pack_key())
        if counts is None:
            return False
        entry.packets, entry.bytes, entry.last_seen_ns = counts
        return True

    def take(self, entry) -> bool:
        return self.refresh(entry) and self.delete(entry)

    def retire(self, conn, direction: int, at: float) -> RetiredEvent:
        """The program's retire_flow: the connection's entries out, their last counts reported."""
        counts, deleted = [(0, 0, 0), (0, 0, 0)], 0
        for f in (conn.in_flow, conn.out_flow):
            if f is not None and f.pack_key() in self.entries:
                counts[f.direction] = tuple(self.entries.pop(f.pack_key()))
                deleted |= 1 << f.direction
        key = conn.in_key if direction == DIR_IN else conn.out_key
        return RetiredEvent(int(at * 1e9), 6, key, direction, deleted, tuple(counts))

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
    assert set(fake.states.values()) <= {tcpstate.SYN_RECV}  # only what went with the SYN (no round drained)
    engine.process(frame(from_client(TCP(sport=40000, dport=80, flags="A"))), 1, 1.2)
    offload.drain(0.0, 1)  # written at once: a short connection's response and FIN go through the kernel
    if conn.out_flow is not None:  # ... the server's side once the engine has drained its interface
        engine.process(frame(from_rs(RIPS[2], TCP(sport=8080, dport=dport, flags="A"), dst=dst)), 2, 1.25)
        offload.drain(0.0, 2)
    return engine, fake, offload, conn


def kernel_event(conn, direction: int, flags: int, old: int, new: int, at: float = 2.0) -> FlowEvent:
    """What the program reports when it forwards a segment that changes the state."""
    key = conn.in_key if direction == DIR_IN else conn.out_key
    return FlowEvent(int(at * 1e9), 6, key, flags, direction, old, new, 1)


def test_tcp_flows_enter_the_map_when_established_with_their_state():
    engine, fake, offload, conn = tcp_established()
    assert set(fake.entries) == {conn.in_flow.pack_key(), conn.out_flow.pack_key()} and len(offload) == 1
    assert set(fake.states.values()) == {tcpstate.ESTABLISHED}


def handshake(busy=None):
    """A NAT connection made ESTABLISHED by the engine (client on ifindex 1, servers on 2), no drain yet."""
    engine = make_engine()
    fake = FakeFlowMap()
    offload = FlowOffload(engine, fake, busy=busy)
    engine.process(frame(from_client(TCP(sport=40000, dport=80, flags="S"))), 1, 1.0)
    (conn,) = engine.conns.conns()
    engine.process(frame(from_rs(RIPS[2], TCP(sport=8080, dport=40000, flags="SA"))), 2, 1.1)
    engine.process(frame(from_client(TCP(sport=40000, dport=80, flags="A"))), 1, 1.2)
    return engine, fake, offload, conn


def test_each_direction_enters_after_a_round_of_the_interface_it_arrives_on():
    # A reply queued for the engine on the servers' side when the client's ACK makes the connection
    # ESTABLISHED must not be overtaken by the next reply, forwarded by the kernel: the reply direction
    # waits for a round of its own interface.
    engine, fake, offload, conn = handshake()
    offload.drain(1.2, 1)
    assert set(fake.entries) == {conn.in_flow.pack_key()}
    offload.drain(1.2, 3)  # another interface's round: still not
    assert set(fake.entries) == {conn.in_flow.pack_key()}
    engine.process(frame(from_rs(RIPS[2], TCP(sport=8080, dport=40000, flags="A"))), 2, 1.3)
    offload.drain(1.3, 2)
    assert set(fake.entries) == {conn.in_flow.pack_key(), conn.out_flow.pack_key()}


def test_with_no_frame_of_its_own_waiting_a_direction_enters_at_once():
    waiting: set[tuple[int, bytes]] = set()  # (interface, flow) of the frames queued for the engine
    engine, fake, offload, conn = handshake(busy=lambda ifindex, key: (ifindex, key) in waiting)
    waiting.add((2, pack_ip(RIPS[1]) + conn.caddr + b"\x1f\x90" + conn.cport))  # another connection's reply
    offload.drain(1.2, 1)
    assert set(fake.entries) == {conn.in_flow.pack_key(), conn.out_flow.pack_key()}


def test_with_a_frame_of_its_own_waiting_a_direction_waits_for_it():
    waiting: set[tuple[int, bytes]] = set()
    engine, fake, offload, conn = handshake(busy=lambda ifindex, key: (ifindex, key) in waiting)
    waiting.add((2, conn.out_flow.key))  # this connection's reply, queued on the servers' side
    offload.drain(1.2, 1)
    assert set(fake.entries) == {conn.in_flow.pack_key()}
    waiting.clear()
    offload.drain(1.2)  # (after other work: the servers' interface is idle now)
    offload.refresh(1.0)
    assert set(fake.entries) == {conn.in_flow.pack_key(), conn.out_flow.pack_key()}


def test_a_recipe_whose_interface_has_no_round_is_written_at_the_second_tick():
    engine, fake, offload, conn = handshake()
    offload.drain(1.2)  # after other work than a round: both wait
    offload.refresh(1.0)
    assert fake.entries == {}
    offload.refresh(1.0)
    assert set(fake.entries) == {conn.in_flow.pack_key(), conn.out_flow.pack_key()}
    engine.process(frame(from_client(TCP(sport=40000, dport=80, flags="R"))), 1, 1.3)
    offload.drain(1.3, 1)
    assert fake.entries == {} and not offload._later.get(1) and not offload._later.get(2)


def test_a_fin_the_engine_sees_itself_takes_the_recipes_out():
    engine, fake, offload, conn = tcp_established()  # (a FIN the program punted: ring full, MTU, ...)
    engine.process(frame(from_client(TCP(sport=40000, dport=80, flags="FA"))), 1, 1.3)
    offload.drain(0.0)
    assert fake.entries == {} and len(offload) == 0


def test_kernel_made_closing_states_keep_the_recipes_until_the_program_retires_them():
    engine, fake, offload, conn = tcp_established()
    dest = conn.dest
    assert (dest.activeconns, dest.inactconns) == (1, 0)
    offload.apply([kernel_event(conn, DIR_IN, TCP_FIN | TCP_ACK, tcpstate.ESTABLISHED, tcpstate.CLOSE_WAIT)])
    offload.drain(0.0)
    assert conn.state == tcpstate.CLOSE_WAIT and (dest.activeconns, dest.inactconns) == (0, 1)
    assert conn.expires == 2.0 + engine.settings.tcp_timeouts[tcpstate.CLOSE_WAIT]
    assert len(fake.entries) == 2 and len(offload) == 1  # the server's FIN goes through the kernel too
    offload.apply([kernel_event(conn, DIR_OUT, TCP_FIN | TCP_ACK, tcpstate.CLOSE_WAIT, tcpstate.TIME_WAIT, 2.1)])
    offload.drain(0.0)
    assert conn.state == tcpstate.TIME_WAIT and len(fake.entries) == 2 and len(offload) == 1
    assert conn.expires == 2.1 + engine.settings.tcp_timeouts[tcpstate.TIME_WAIT]
    # The client's last ACK goes through the kernel, which takes the entries out with it.
    svc = conn.svc
    inpkts, inbytes = svc.stats.inpkts, svc.stats.inbytes
    fake.forward(conn.in_flow, 1, 40, at=2.2)
    offload.apply([fake.retire(conn, DIR_IN, 2.2)])
    offload.drain(0.0)
    assert fake.entries == {} and len(offload) == 0 and offload.retired == 1
    assert (svc.stats.inpkts, svc.stats.inbytes) == (inpkts + 1, inbytes + 40)
    offload.refresh(1.0)
    offload.refresh(1.0)
    assert svc.stats.inpkts == inpkts + 1  # counted once
    engine.process(frame(from_client(TCP(sport=40000, dport=80, flags="A"))), 1, 2.3)  # a repeat: engine
    assert conn.state == tcpstate.TIME_WAIT and not engine.drops


def test_without_a_last_segment_the_recipes_are_withdrawn_at_the_second_tick():
    engine, fake, offload, conn = tcp_established()
    offload.apply([kernel_event(conn, DIR_OUT, TCP_FIN | TCP_ACK, tcpstate.ESTABLISHED, tcpstate.FIN_WAIT),
                   kernel_event(conn, DIR_IN, TCP_FIN | TCP_ACK, tcpstate.FIN_WAIT, tcpstate.TIME_WAIT, 2.1)])
    offload.drain(0.0)
    assert conn.state == tcpstate.TIME_WAIT and len(fake.entries) == 2
    fake.forward(conn.out_flow, 1, 40, at=2.2)
    offload.refresh(1.0)
    assert len(fake.entries) == 2  # (the last ACK may still be on its way)
    outpkts = conn.svc.stats.outpkts
    offload.refresh(1.0)
    assert fake.entries == {} and len(offload) == 0 and conn.svc.stats.outpkts == outpkts
    offload.refresh(1.0)


def test_a_retirement_that_crosses_a_withdrawal_counts_what_the_withdrawal_missed():
    engine, fake, offload, conn = tcp_established()
    fake.forward(conn.in_flow, 3, 300, at=2.0)
    late = fake.retire(conn, DIR_IN, 2.0)  # the program took them out ...
    engine.process(frame(from_client(TCP(sport=40000, dport=80, flags="R"))), 1, 2.1)
    offload.drain(0.0)  # ... before the engine's withdrawal read them: it found nothing
    assert len(offload) == 0 and conn.in_pkts == 2 + 1
    offload.apply([late])
    assert conn.in_pkts == 2 + 1 + 3


def test_a_kernel_made_reset_closes_the_connection_and_its_counts():
    engine, fake, offload, conn = tcp_established()
    offload.apply([kernel_event(conn, DIR_OUT, TCP_RST, tcpstate.ESTABLISHED, tcpstate.CLOSE)])
    offload.drain(0.0)
    assert conn.state == tcpstate.CLOSE and len(offload) == 1  # the program retires them with the RST
    offload.apply([fake.retire(conn, DIR_OUT, 2.0)])
    assert fake.entries == {} and len(offload) == 0
    assert (conn.dest.activeconns, conn.dest.inactconns) == (0, 1)
    engine.tick(2.0 + engine.settings.tcp_timeouts[tcpstate.CLOSE] + 0.1)
    assert conn.dead and (conn.dest.activeconns, conn.dest.inactconns) == (0, 0)


def test_kernel_changes_apply_in_order_and_a_disagreement_withdraws():
    engine, fake, offload, conn = tcp_established()
    offload.apply([
        kernel_event(conn, DIR_OUT, TCP_FIN | TCP_ACK, tcpstate.ESTABLISHED, tcpstate.FIN_WAIT),
        # The engine's table says FIN_WAIT + ack stays FIN_WAIT: a report of anything else disagrees.
        kernel_event(conn, DIR_IN, TCP_ACK, tcpstate.FIN_WAIT, tcpstate.CLOSE),
    ])
    offload.drain(0.0)
    assert conn.state == tcpstate.FIN_WAIT and offload.mismatches == 1 and fake.entries == {}


def test_kernel_made_changes_reach_the_other_consumers_but_not_the_reporter():
    engine, fake, offload, conn = tcp_established()
    sync = engine.subscribe(services=False, conns=True)  # another consumer, as the sync master is
    offload.apply([kernel_event(conn, DIR_IN, TCP_FIN | TCP_ACK, tcpstate.ESTABLISHED, tcpstate.CLOSE_WAIT)])
    assert [(e.kind, e.value) for e in sync] == [(ConnEventKind.STATE, tcpstate.CLOSE_WAIT)]
    assert not offload.events.queue  # it applied the change itself: nothing comes back to it
    engine.process(frame(from_client(TCP(sport=40000, dport=80, flags="R"))), 1, 2.1)  # the engine's own
    assert [e.kind for e in offload.events.queue] == [ConnEventKind.STATE]
    assert [e.kind for e in sync] == [ConnEventKind.STATE]


def test_a_report_for_a_connection_already_gone_is_ignored():
    engine, fake, offload, conn = tcp_established()
    engine.tick(10_000.0)
    assert conn.dead
    offload.apply([kernel_event(conn, DIR_IN, TCP_RST, tcpstate.ESTABLISHED, tcpstate.CLOSE)])
    offload.drain(0.0)
    assert fake.entries == {} and not offload.mismatches


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
    offload.drain(1.1, 2)  # the round that drained the reply's interface
    assert set(fake.entries) == {conn.in_flow.pack_key(), conn.out_flow.pack_key()}


def test_a_udp_exchange_shorter_than_the_delay_never_touches_the_map():
    engine = make_engine(proto=17)
    fake = FakeFlowMap()
    writes = []
    fake.put = writes.append  # type: ignore[method-assign]
    offload = FlowOffload(engine, fake)
    engine.process(frame(from_client(UDP(sport=40000, dport=80))), 1, 1.0)
    offload.drain(1.0)
    (conn,) = engine.conns.conns()
    engine._expire(conn)  # (as the tick would)
    offload.drain(1.0 + OFFLOAD_DELAY)
    assert writes == [] and len(offload) == 0


def test_fullnat_waits_for_the_client_address_to_be_delivered():
    engine, fake, offload, conn = tcp_established(Method.FULLNAT)
    # The client's ACK carried the TOA: from then on its direction may go to the kernel too.
    assert set(fake.entries) == {conn.in_flow.pack_key(), conn.out_flow.pack_key()}


def test_a_fullnat_reply_key_stays_claimed_while_its_connection_lives():
    # Its reply key is claimed at binding (a placeholder the program's NOEXIST creation cannot take),
    # its recipe takes the placeholder's place, a withdrawal puts the placeholder back, expiry frees it.
    engine, fake, offload, conn = tcp_established(Method.FULLNAT)
    out = conn.out_flow.pack_key()
    assert out in fake.entries
    offload.reroute()  # (the engine forgot its hops: the recipes out)
    assert set(fake.entries) == {out} and not fake.put_new(out, b"")  # still held
    engine._expire(conn)
    offload.drain(3.0)
    assert fake.entries == {}


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
    assert fake.entries == {}  # each waits for a round of the interface it arrives on
    offload.drain(1.0, 1)
    assert set(fake.entries) == {conn.in_flow.pack_key()}
    offload.refresh(1.0)
    offload.refresh(1.0)  # ... or for a second tick
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


def test_dr_recipes_leave_with_a_kernel_made_fin_wait():
    # The program retires a DR entry with the FIN that makes FIN_WAIT: its counts come with it, nothing
    # is left for lvsd to read or delete.
    engine, fake, offload, conn = tcp_established(Method.ROUTE)
    assert set(fake.entries) == {conn.in_flow.pack_key()}
    fake.forward(conn.in_flow, 5, 700, 1.9)
    inpkts = conn.dest.stats.inpkts
    fake.take = None  # (called, it would fail the test: no map read or delete here)
    offload.apply([kernel_event(conn, DIR_IN, TCP_FIN | TCP_ACK, tcpstate.ESTABLISHED, tcpstate.FIN_WAIT),
                   fake.retire(conn, DIR_IN, 2.0)])
    offload.drain(0.0)
    offload.refresh(1.0)
    assert conn.state == tcpstate.FIN_WAIT and fake.entries == {} and not offload.mismatches
    assert (conn.dest.activeconns, conn.dest.inactconns) == (0, 1)
    assert len(offload) == 0 and offload.retired == 1
    assert conn.dest.stats.inpkts == inpkts + 5  # the kernel's counts, told once


def test_dr_recipes_left_by_a_fin_without_room_to_retire_them_leave_a_tick_later():
    engine, fake, offload, conn = tcp_established(Method.ROUTE)
    offload.apply([kernel_event(conn, DIR_IN, TCP_FIN | TCP_ACK, tcpstate.ESTABLISHED, tcpstate.FIN_WAIT)])
    offload.refresh(1.0)
    assert set(fake.entries) == {conn.in_flow.pack_key()}  # the RETIRED record may still come
    offload.refresh(1.0)
    assert fake.entries == {} and len(offload) == 0 and conn.state == tcpstate.FIN_WAIT


def test_an_ipv6_direction_waits_for_a_round_of_its_interfaces_ipv6_ring():
    # IPv6 frames queue in a ring of their own: a round of the same interface's IPv4 ring leaves them there.
    engine = make_engine6()
    fake = FakeFlowMap()
    offload = FlowOffload(engine, fake)
    engine.process(frame(from_client6(TCP(sport=40000, dport=80, flags="S"))), 1, 1.0)
    (conn,) = engine.conns.conns()
    engine.process(frame(from_rs6(RIPS6[2], TCP(sport=8080, dport=40000, flags="SA"))), 2, 1.1)
    engine.process(frame(from_client6(TCP(sport=40000, dport=80, flags="A"))), 1, 1.2)
    offload.drain(1.2, 1, AF_INET)  # the client side's IPv4 ring: other work for this connection
    assert fake.entries == {}
    offload.drain(1.2, 1, AF_INET6)
    assert set(fake.entries) == {conn.in_flow.pack_key()}
    offload.drain(1.2, 2, AF_INET)  # the servers' side IPv4 ring: not yet
    assert set(fake.entries) == {conn.in_flow.pack_key()}
    offload.drain(1.3, 2, AF_INET6)
    assert set(fake.entries) == {conn.in_flow.pack_key(), conn.out_flow.pack_key()}


def test_a_ring_record_of_no_known_size_is_not_an_event():
    from pylvs.datapath.bpf.events import decode
    from pylvs.engine.flow import EVENT

    assert decode(bytes(EVENT.size + 8)) is None  # (skipped and counted by EventRing.read)
    assert isinstance(decode(bytes(EVENT.size)), FlowEvent)


def syn(engine, offload, sport: int, at: float = 1.0):
    """A client's SYN through the engine (scheduled there) and the round's drain of its interface."""
    engine.process(frame(from_client(TCP(sport=sport, dport=80, flags="S"))), 1, at)
    offload.drain(at, 1)
    return next(c for c in engine.conns.conns() if c.cport == sport.to_bytes(2, "big"))


def test_recipes_go_to_the_kernel_with_the_syn_the_engine_scheduled():
    engine = make_engine()
    fake = FakeFlowMap()
    offload = FlowOffload(engine, fake, busy=lambda ifindex, key: False)
    conn = syn(engine, offload, 40000)
    assert conn.out_flow.hop is not None  # the reply recipe's next hop, found before any reply
    assert set(fake.entries) == {conn.in_flow.pack_key(), conn.out_flow.pack_key()}
    assert set(fake.states.values()) == {tcpstate.SYN_RECV} and len(offload) == 1
    # The kernel forwards the SYN+ACK (no change) and the client's ACK, and reports ESTABLISHED.
    offload.apply([kernel_event(conn, DIR_IN, TCP_ACK, tcpstate.SYN_RECV, tcpstate.ESTABLISHED)])
    offload.drain(2.0)
    assert conn.state == tcpstate.ESTABLISHED and (conn.dest.activeconns, conn.dest.inactconns) == (1, 0)
    assert len(fake.entries) == 2 and not offload.mismatches


def test_at_most_a_share_of_the_map_holds_connections_still_in_syn_recv():
    """A SYN flood must not push established flows out of the map: past capacity / EMBRYONIC_SHARE
    connections in SYN_RECV, recipes wait for ESTABLISHED as before."""
    engine = make_engine()
    fake = FakeFlowMap()
    offload = FlowOffload(engine, fake, busy=lambda ifindex, key: False, capacity=3 * EMBRYONIC_SHARE)
    conns = [syn(engine, offload, 40000 + i) for i in range(5)]
    assert len(offload) == 3 and len(fake.entries) == 6
    assert conns[3] not in offload._offloaded and conns[4] not in offload._offloaded
    offload.apply([kernel_event(conns[0], DIR_IN, TCP_ACK, tcpstate.SYN_RECV, tcpstate.ESTABLISHED)])
    late = syn(engine, offload, 40010)  # room again: one of the three left SYN_RECV
    assert late in offload._offloaded and len(offload) == 4
    engine.tick(1.0 + engine.settings.tcp_timeouts[tcpstate.SYN_RECV] + 1)  # the rest expire
    offload.drain(100.0)
    assert len(offload) == 1 and not offload._embryonic


def test_a_handshake_the_engine_forwards_after_the_syn_rewrites_the_kernels_state():
    engine = make_engine()
    fake = FakeFlowMap()
    offload = FlowOffload(engine, fake, busy=lambda ifindex, key: False)
    conn = syn(engine, offload, 40000)
    engine.process(frame(from_rs(RIPS[2], TCP(sport=8080, dport=40000, flags="SA"))), 2, 1.1)
    engine.process(frame(from_client(TCP(sport=40000, dport=80, flags="A"))), 1, 1.2)  # queued before it
    offload.drain(1.2, 1)
    assert conn.state == tcpstate.ESTABLISHED and set(fake.states.values()) == {tcpstate.ESTABLISHED}
    assert len(fake.entries) == 2 and not offload._embryonic
