"""FIN, RST and the closing ACKs in the fast path (BPF_PROG_TEST_RUN, decoded by scapy).

The program forwards them by the recipe like data, runs the engine's TCP state table on the entry's
tcp_state, writes the change into both directions' entries and reports it on the event ring; a
segment that changes nothing reports nothing; a full ring sends the segment to the engine unchanged.
The segment that ends the connection (the ACK after TIME_WAIT, a RST) takes its entries out of the map
and reports their last counts (RetiredEvent).
"""

from __future__ import annotations

import select
import threading
import time

import pytest
from scapy.layers.inet import IP, TCP

from pylvs.datapath.bpf.events import FlowEvent, RetiredEvent
from pylvs.datapath.bpf.loader import FastPath
from pylvs.engine import tcpstate
from pylvs.engine.flow import DIR_IN, DIR_OUT, EVENT, RETIRED, VALUE, VALUE_FIELDS
from pylvs.packet.layout import TCP_ACK, TCP_FIN, TCP_RST
from tests.integration.bpf_flows import RIP, TC_ACT_OK, TC_ACT_REDIRECT, dr, nat
from tests.integration.test_bpf_prog import fast, forwarded  # noqa: F401 - fast is a fixture
from tests.unit.director import CLIENT, VIP, checksums_valid, from_client, from_rs

_NAMES = [name for name, _, _ in VALUE_FIELDS]


@pytest.fixture
def fp(request):
    prog = request.getfixturevalue("fast")  # the program loaded once for the module (test_bpf_prog's)
    prog.events.read()
    yield prog
    prog.flows.clear()
    prog.events.read()


def entry_state(fp, entry) -> tuple[int, int, int]:
    """(tcp_state, tcp_flags, transitions) of the entry as the kernel holds it."""
    fields = dict(zip(_NAMES, VALUE.unpack(fp.flows.lookup(entry.pack_key())), strict=True))
    return fields["tcp_state"], fields["tcp_flags"], fields["transitions"]


def client(flags: str, payload: bytes = b"") -> object:
    return from_client(TCP(sport=40000, dport=80, flags=flags, seq=5000, ack=9000) / payload)


def server(flags: str, payload: bytes = b"") -> object:
    return from_rs(RIP, TCP(sport=8080, dport=40000, flags=flags, seq=9000, ack=5001) / payload)


def test_a_client_fin_is_rewritten_redirected_and_reported(fp):
    inbound, outbound = nat()
    fp.flows.put(outbound)
    pkt = forwarded(fp, client("FA"), inbound)
    assert pkt[IP].dst == RIP and pkt[TCP].dport == 8080 and pkt[TCP].flags == "FA" and checksums_valid(pkt)
    (ev,) = fp.events.read()
    assert ev.key == inbound.key and ev.proto == 6 and ev.direction == DIR_IN
    assert ev.tcp_flags == TCP_FIN | TCP_ACK and ev.transitions == 1
    assert (ev.old_state, ev.new_state) == (tcpstate.ESTABLISHED, tcpstate.CLOSE_WAIT)
    assert entry_state(fp, inbound) == (tcpstate.CLOSE_WAIT, TCP_FIN | TCP_ACK, 1)
    assert entry_state(fp, outbound)[0] == tcpstate.CLOSE_WAIT  # the other direction knows it too
    assert fp.flows.refresh(inbound) and inbound.packets == 1  # counted like data


def test_a_whole_close_through_the_kernel_reports_exactly_the_engine_table(fp):
    """Server closes first (a Connection: close response): data, FIN, ACK, FIN, ACK."""
    inbound, outbound = nat()
    fp.flows.put(inbound)
    fp.flows.put(outbound)
    steps = [(server("PA", b"200 OK"), None), (server("FA"), tcpstate.FIN_WAIT), (client("A"), None),
             (client("FA"), tcpstate.TIME_WAIT)]
    state = tcpstate.ESTABLISHED
    for pkt, new in steps:
        out = forwarded(fp, pkt)
        assert checksums_valid(out)
        events = fp.events.read()
        if new is None:
            assert events == []
            continue
        (ev,) = events
        direction = DIR_OUT if out[IP].src == VIP else DIR_IN
        offset = tcpstate.OUTPUT if direction == DIR_OUT else tcpstate.INPUT
        assert ev.direction == direction and (ev.old_state, ev.new_state) == (state, new)
        assert tcpstate.next_state(state, offset, ev.tcp_flags) == new  # the engine's own table
        state = new
    assert entry_state(fp, inbound)[0] == entry_state(fp, outbound)[0] == tcpstate.TIME_WAIT
    # The server's last ACK: forwarded, then both entries are taken out with their last counts.
    out = forwarded(fp, server("A"))
    assert out[IP].src == VIP and out[TCP].flags == "A" and checksums_valid(out)
    (retired,) = fp.events.read()
    assert isinstance(retired, RetiredEvent) and retired.key == outbound.key and retired.direction == DIR_OUT
    assert retired.deleted == 1 << DIR_IN | 1 << DIR_OUT
    assert [c[:2] for c in retired.counts] == [(2, 80), (3, 40 + 6 + 40 + 40)]  # client: A, FA; server: PA, FA, A
    assert retired.counts[DIR_OUT][2] >= retired.counts[DIR_IN][2] > 0
    assert fp.flows.lookup(inbound.pack_key()) is None and fp.flows.lookup(outbound.pack_key()) is None
    assert fp.test_run(bytes(client("A"))).verdict == TC_ACT_OK  # a repeat: the engine's


def test_a_fin_repeated_in_time_wait_keeps_the_entries(fp):
    inbound, outbound = nat()
    fp.flows.put(outbound)
    forwarded(fp, server("FA"), inbound)
    forwarded(fp, client("FA"))
    assert [e.new_state for e in fp.events.read()] == [tcpstate.FIN_WAIT, tcpstate.TIME_WAIT]
    forwarded(fp, client("FA"))  # a retransmitted FIN: the last ACK is still to come
    assert fp.events.read() == [] and fp.flows.lookup(inbound.pack_key()) is not None


def test_a_rst_closes_and_retires_the_connection(fp):
    inbound, outbound = nat()
    fp.flows.put(outbound)
    pkt = forwarded(fp, server("R"), inbound)
    assert pkt[IP].src == VIP and pkt[TCP].flags == "R"
    ev, retired = fp.events.read()
    assert (ev.old_state, ev.new_state, ev.direction) == (tcpstate.ESTABLISHED, tcpstate.CLOSE, DIR_OUT)
    assert isinstance(retired, RetiredEvent) and retired.deleted == 1 << DIR_IN | 1 << DIR_OUT
    assert retired.counts[DIR_OUT][:2] == (1, 40) and retired.counts[DIR_IN][:2] == (0, 0)
    # Late data, another RST, a FIN: the engine's now (IPVS forwards them until the connection expires).
    for pkt in (client("PA", b"late"), server("R"), client("FA")):
        assert fp.test_run(bytes(pkt)).verdict == TC_ACT_OK
    assert fp.events.read() == []


def test_a_retirement_finds_only_the_entries_still_there(fp):
    inbound, _ = nat()
    forwarded(fp, client("R"), inbound)  # the reply entry was never written (or was evicted)
    ev, retired = fp.events.read()
    assert ev.new_state == tcpstate.CLOSE and retired.deleted == 1 << DIR_IN
    assert retired.counts[DIR_IN][0] == 1 and retired.counts[DIR_OUT] == (0, 0, 0)


def test_a_segment_without_flags_on_a_closing_connection_closes_it(fp):
    """The engine's table: no SYN/FIN/ACK/RST is CLOSE, except on an established connection."""
    inbound, _ = nat()
    forwarded(fp, client(""), inbound)
    assert fp.events.read() == []  # established: the engine's common path, no change
    forwarded(fp, client("FA"))
    forwarded(fp, client(""))
    events = fp.events.read()
    assert [(e.old_state, e.new_state) for e in events if isinstance(e, FlowEvent)] == [
        (tcpstate.ESTABLISHED, tcpstate.CLOSE_WAIT), (tcpstate.CLOSE_WAIT, tcpstate.CLOSE)]
    assert isinstance(events[-1], RetiredEvent)


def test_dr_uses_the_input_only_rows(fp):
    entry = dr()
    forwarded(fp, client("A"), entry)
    forwarded(fp, client("R"))
    ev, retired = fp.events.read()
    assert (ev.old_state, ev.new_state) == (tcpstate.ESTABLISHED, tcpstate.CLOSE)  # INPUT_ONLY rst
    assert ev.tcp_flags == TCP_RST
    assert retired.deleted == 1 << DIR_IN and retired.counts[DIR_IN][0] == 2  # DR: one entry


def test_a_dr_fin_retires_the_entry_at_fin_wait(fp):
    """Nothing moves a DR connection on from FIN_WAIT (its replies bypass the director): the FIN is
    forwarded, reported, and takes the entry out; what comes after is the engine's."""
    entry = dr()
    forwarded(fp, client("A"), entry)
    pkt = forwarded(fp, client("FA"))
    assert pkt[IP].dst == VIP and pkt[IP].src == CLIENT and pkt[TCP].flags == "FA"
    ev, retired = fp.events.read()
    assert (ev.old_state, ev.new_state) == (tcpstate.ESTABLISHED, tcpstate.FIN_WAIT)  # INPUT_ONLY fin
    assert isinstance(retired, RetiredEvent) and retired.key == entry.key
    assert retired.deleted == 1 << DIR_IN and retired.counts[DIR_IN][0] == 2
    assert fp.flows.lookup(entry.pack_key()) is None
    raw = bytes(client("A"))
    verdict, out, _ = fp.test_run(raw)
    assert (verdict, out) == (TC_ACT_OK, raw)  # the client's last ACK: to the engine, unchanged


def test_a_full_event_ring_sends_the_segment_to_the_engine_unchanged():
    with FastPath(pin_root=None, max_flows=64, event_bytes=4096) as fp:
        inbound, _ = nat()
        raw = bytes(client("R"))
        verdicts = []
        for _ in range(40):  # a RST: a 64-byte record (with its header) and its retirement's 112: 4 KB hold 23
            fp.flows.put(inbound)  # established again: every RST is a change
            verdict, out, _ = fp.test_run(raw)
            verdicts.append(verdict)
            if verdict == TC_ACT_OK:
                assert out == raw
                assert entry_state(fp, inbound)[0] == tcpstate.ESTABLISHED  # unchanged: the engine decides
                assert fp.flows.refresh(inbound) and inbound.packets == 0
        counters = fp.counters.read()
        events = fp.events.read()
        changes = [e for e in events if isinstance(e, FlowEvent)]
        assert counters["punt_ring_full"] == verdicts.count(TC_ACT_OK) > 0
        assert counters["tcp_event"] == verdicts.count(TC_ACT_REDIRECT) == len(changes) >= 20
        # A change with no room left for its retirement leaves the entry in place, for the engine to withdraw.
        assert len(events) - len(changes) in (len(changes), len(changes) - 1)
        fp.flows.put(inbound)
        assert fp.test_run(raw).verdict == TC_ACT_REDIRECT  # read: room again
        ev, retired = fp.events.read()
        assert ev.new_state == tcpstate.CLOSE and retired.counts[DIR_IN][0] == 1
        assert fp.flows.lookup(inbound.pack_key()) is None


def test_take_reads_the_last_counts_and_deletes_in_one_step(fp):
    inbound, _ = nat()
    forwarded(fp, client("PA", b"data"), inbound)
    forwarded(fp, client("FA"))
    assert fp.flows.take(inbound) and inbound.packets == 2 and inbound.last_seen_ns > 0
    assert fp.flows.lookup(inbound.pack_key()) is None
    assert not fp.flows.take(inbound)


def test_records_that_wrap_around_the_ring_read_whole():
    """A 4 KB ring read after every segment: its positions go round it several times, records straddle
    its end (read as one through the pages mapped twice over), every one decodes whole and in order."""
    with FastPath(pin_root=None, max_flows=64, event_bytes=4096) as fp:
        inbound, _ = nat()
        raw = bytes(client("R"))
        for i in range(100):  # 176 bytes per RST (its change and its retirement): 4.3 times round
            inbound.packets = 0
            fp.flows.put(inbound)
            assert fp.test_run(raw).verdict == TC_ACT_REDIRECT
            ev, retired = fp.events.read()
            assert (ev.key, ev.old_state, ev.new_state) == (inbound.key, tcpstate.ESTABLISHED, tcpstate.CLOSE), i
            assert retired.key == inbound.key and retired.counts[DIR_IN][:2] == (1, 40), i
        assert fp.events.read() == [] and fp.counters.read()["punt_ring_full"] == 0


def _record(size: int) -> int:
    """Bytes a record takes on the ring: an 8-byte header, rounded up to 8."""
    return (size + 8 + 7) & ~7


def _waiting_in_epoll(tid: int) -> bool:
    with open(f"/proc/self/task/{tid}/wchan") as f:
        wchan = f.read()
    return "epoll_wait" in wchan or "ep_poll" in wchan  # (the name depends on the kernel's inlining)


def test_lvsd_is_woken_per_batch_of_events_not_per_event():
    """The program wakes a reader sleeping on the ring only once EVENT_WAKEUP_BYTES wait (lvsd reads it
    at every round and every EVENT_POLL anyway): a connection's few records cost no wakeup of their own."""
    per_rst = _record(EVENT.size) + _record(RETIRED.size)  # a RST: its change and its retirement
    below = (64 * 1024 - 1) // per_rst  # RSTs that stay under the mark
    with FastPath(pin_root=None, max_flows=64) as fp:
        inbound, _ = nat()
        raw = bytes(client("R"))

        def rst() -> None:
            fp.flows.put(inbound)  # established again: every RST is a change
            assert fp.test_run(raw).verdict == TC_ACT_REDIRECT

        ep = select.epoll()
        ep.register(fp.events.fileno(), select.EPOLLIN)
        woken: list = []
        waiter = threading.Thread(target=lambda: woken.append(ep.poll(20.0)))
        waiter.start()
        try:
            deadline = time.monotonic() + 10
            while not (waiter.native_id and _waiting_in_epoll(waiter.native_id)):
                assert time.monotonic() < deadline, "the waiter never slept in epoll"
                time.sleep(0.01)
            for _ in range(below):
                rst()
            time.sleep(0.3)
            assert not woken  # asleep with below * 176 bytes waiting
            rst()
            waiter.join(5)
            assert woken and woken[0]  # the record past the mark woke it
        finally:
            waiter.join(25)
            ep.close()
        assert len(fp.events.read()) == 2 * (below + 1)
