"""FIN, RST and the closing ACKs in the fast path (BPF_PROG_TEST_RUN, decoded by scapy).

The program forwards them by the recipe like data, runs the engine's TCP state table on the entry's
tcp_state, writes the change into both directions' entries and reports it on the event ring; a
segment that changes nothing reports nothing; a full ring sends the segment to the engine unchanged.
"""

from __future__ import annotations

import pytest
from scapy.layers.inet import IP, TCP

from pylvs.datapath.bpf.loader import FastPath
from pylvs.datapath.bpf.maps import counts
from pylvs.engine import tcpstate
from pylvs.engine.flow import DIR_IN, DIR_OUT, VALUE, VALUE_FIELDS
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
             (client("FA"), tcpstate.TIME_WAIT), (server("A"), None)]
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


def test_rst_then_more_segments_closes_once_and_keeps_forwarding(fp):
    inbound, outbound = nat()
    fp.flows.put(outbound)
    pkt = forwarded(fp, server("R"), outbound)
    assert pkt[IP].src == VIP and pkt[TCP].flags == "R"
    (ev,) = fp.events.read()
    assert (ev.old_state, ev.new_state, ev.direction) == (tcpstate.ESTABLISHED, tcpstate.CLOSE, DIR_OUT)
    # Late data, another RST, a FIN: CLOSE stays CLOSE in the table; the segments still go through,
    # as IPVS forwards them until the connection expires.
    fp.flows.put(inbound)
    assert entry_state(fp, inbound)[0] == tcpstate.ESTABLISHED  # (re-written: as the engine put it)
    forwarded(fp, client("RA"))
    (ev,) = fp.events.read()
    assert (ev.old_state, ev.new_state) == (tcpstate.ESTABLISHED, tcpstate.CLOSE)
    for pkt in (client("PA", b"late"), server("R"), client("FA"), server("A")):
        forwarded(fp, pkt)
    assert fp.events.read() == []


def test_a_segment_without_flags_on_a_closing_connection_closes_it(fp):
    """The engine's table: no SYN/FIN/ACK/RST is CLOSE, except on an established connection."""
    inbound, _ = nat()
    forwarded(fp, client(""), inbound)
    assert fp.events.read() == []  # established: the engine's common path, no change
    forwarded(fp, client("FA"))
    forwarded(fp, client(""))
    assert [(e.old_state, e.new_state) for e in fp.events.read()] == [
        (tcpstate.ESTABLISHED, tcpstate.CLOSE_WAIT), (tcpstate.CLOSE_WAIT, tcpstate.CLOSE)]


def test_dr_uses_the_input_only_rows(fp):
    entry = dr()
    pkt = forwarded(fp, client("FA"), entry)
    assert pkt[IP].dst == VIP and pkt[IP].src == CLIENT
    (ev,) = fp.events.read()
    assert (ev.old_state, ev.new_state) == (tcpstate.ESTABLISHED, tcpstate.FIN_WAIT)  # INPUT_ONLY fin
    forwarded(fp, client("A"))
    assert fp.events.read() == []
    forwarded(fp, client("R"))
    (ev,) = fp.events.read()
    assert ev.new_state == tcpstate.CLOSE and ev.tcp_flags == TCP_RST


def test_a_full_event_ring_sends_the_segment_to_the_engine_unchanged():
    with FastPath(pin_root=None, max_flows=64, event_bytes=4096) as fp:
        inbound, _ = nat()
        raw = bytes(client("R"))
        verdicts = []
        for _ in range(80):  # 64-byte records (with their header): a 4 KB ring holds 64
            fp.flows.put(inbound)  # established again: every RST is a change
            verdict, out, _ = fp.test_run(raw)
            verdicts.append(verdict)
            if verdict == TC_ACT_OK:
                assert out == raw
                assert entry_state(fp, inbound)[0] == tcpstate.ESTABLISHED  # unchanged: the engine decides
                assert fp.flows.refresh(inbound) and inbound.packets == 0
        counters = fp.counters.read()
        assert counters["punt_ring_full"] == verdicts.count(TC_ACT_OK) > 0
        assert counters["tcp_event"] == verdicts.count(TC_ACT_REDIRECT) == len(fp.events.read()) >= 60
        fp.flows.put(inbound)
        assert fp.test_run(raw).verdict == TC_ACT_REDIRECT  # read: room again
        assert counts(fp.flows.lookup(inbound.pack_key()))[0] == 1


def test_take_reads_the_last_counts_and_deletes_in_one_step(fp):
    inbound, _ = nat()
    forwarded(fp, client("PA", b"data"), inbound)
    forwarded(fp, client("FA"))
    assert fp.flows.take(inbound) and inbound.packets == 2 and inbound.last_seen_ns > 0
    assert fp.flows.lookup(inbound.pack_key()) is None
    assert not fp.flows.take(inbound)
