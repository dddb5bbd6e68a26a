"""FULLNAT TOA inserted by the fast path (FLOW_F_TOA, pylvs_fastpath.bpf.c insert_toa) on crafted frames
(BPF_PROG_TEST_RUN), decoded by scapy.

A FULLNAT request entry marked F_TOA: the client's first ACK leaves rewritten LIP:lport -> RIP:rport with
the TOA option (kind 254, length 8: the client's port and address as it sent them) first, before the
options it had (kept: one after end-of-list padding would not be read), data offset + 2, IP total
length + 8, both checksums valid by scapy's own recomputation; the mark is cleared in the entry and the
insertion reported on the event ring (with the state change, or alone); the next ACK goes without. A
segment the program cannot insert it into (payload, a GSO frame, a full TCP header) comes back
unchanged (punt_toa), the mark kept. Needs root (BPF).
"""

from __future__ import annotations

import pytest
from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether

from pylvs.datapath.bpf.events import FlowEvent
from pylvs.datapath.bpf.loader import FastPath
from pylvs.engine import tcpstate
from pylvs.engine.flow import DIR_IN, F_TOA, VALUE, VALUE_FIELDS
from pylvs.engine.services import pack_ip
from tests.integration.bpf_flows import LIP, RIP, TC_ACT_OK, TC_ACT_REDIRECT, fullnat
from tests.integration.test_bpf_prog import fast, run  # noqa: F401 - fast is a fixture
from tests.unit.director import CLIENT, checksums_valid, from_client

FIELD = {name: i for i, (name, _, _) in enumerate(VALUE_FIELDS)}
TOA = (40000).to_bytes(2, "big") + pack_ip(CLIENT)
TS = ("Timestamp", (111, 222))


@pytest.fixture
def fp(request):
    prog = request.getfixturevalue("fast")  # the program loaded once for the module (test_bpf_prog's)
    prog.events.read()
    yield prog
    prog.flows.clear()
    prog.events.read()


def marked(fp, state: int = tcpstate.SYN_RECV):
    """The FULLNAT entries of one connection in `state`, the request's marked F_TOA, in the map."""
    inbound, outbound = fullnat()
    inbound.flags |= F_TOA
    for f in (inbound, outbound):
        f.tcp_state = state
        fp.flows.put(f)
    return inbound


def stored(fp, f) -> tuple:
    return VALUE.unpack(fp.flows.lookup(f.pack_key()))


def ack(options=(), payload: bytes = b"", flags: str = "A") -> bytes:
    return bytes(from_client(TCP(sport=40000, dport=80, flags=flags, seq=1001, ack=5001, options=list(options))
                             / payload))


@pytest.mark.parametrize("options", [[], [TS], [("NOP", None), ("NOP", None), TS],
                                     [("SAckOK", b""), TS, ("WScale", 7), TS]],
                         ids=["none", "timestamp", "nop-nop-timestamp", "full-but-8"])
def test_the_first_ack_leaves_with_toa_after_its_options(fp, options):
    f = marked(fp)
    sent = Ether(ack(options))
    before = fp.counters.read()
    verdict, out = run(fp, bytes(sent))
    assert verdict == TC_ACT_REDIRECT
    pkt = Ether(out)
    assert (pkt[IP].src, pkt[TCP].sport, pkt[IP].dst, pkt[TCP].dport) == (LIP, 5001, RIP, 8080)
    assert pkt[IP].len == sent[IP].len + 8 and pkt[TCP].dataofs == sent[TCP].dataofs + 2 and pkt[IP].ttl == 63
    assert len(out) == 14 + pkt[IP].len  # grown at the tail, nothing after the packet
    raw_options = bytes(pkt[TCP])[20:pkt[TCP].dataofs * 4]
    sent_options = bytes(sent[TCP])[20:sent[TCP].dataofs * 4]
    assert raw_options == bytes((254, 8)) + TOA + sent_options  # TOA first (as the engine), the options kept
    assert [o for o in pkt[TCP].options if o[0] == 254] == [(254, TOA)]
    assert pkt[TCP].flags == "A" and pkt[TCP].seq == 1001 and pkt[TCP].ack == 5001
    assert checksums_valid(pkt)
    assert not stored(fp, f)[FIELD["flags"]] & F_TOA
    after = fp.counters.read()
    assert after["hit"] == before["hit"] + 1 and after["punt_toa"] == before["punt_toa"]
    events = [e for e in fp.events.read() if isinstance(e, FlowEvent)]
    assert [(e.direction, e.old_state, e.new_state, e.tcp_flags) for e in events] == \
        [(DIR_IN, tcpstate.SYN_RECV, tcpstate.ESTABLISHED, 0x10)]
    # The next ACK goes as it came: no second TOA.
    verdict, out = run(fp, ack(options))
    nxt = Ether(out)
    assert verdict == TC_ACT_REDIRECT and nxt[TCP].dataofs == sent[TCP].dataofs and nxt[IP].len == sent[IP].len
    assert not [o for o in nxt[TCP].options if o[0] == 254] and checksums_valid(nxt)
    assert fp.events.read() == []


def test_an_insertion_without_a_state_change_is_reported_too(fp):
    marked(fp, tcpstate.ESTABLISHED)
    verdict, out = run(fp, ack())
    assert verdict == TC_ACT_REDIRECT and [o for o in Ether(out)[TCP].options if o[0] == 254] == [(254, TOA)]
    events = [e for e in fp.events.read() if isinstance(e, FlowEvent)]
    assert [(e.direction, e.old_state, e.new_state) for e in events] == \
        [(DIR_IN, tcpstate.ESTABLISHED, tcpstate.ESTABLISHED)]


@pytest.mark.parametrize(("frame", "gso"), [
    (ack(payload=b"GET / HTTP/1.0\r\n\r\n", flags="PA"), 0),  # data: the engine inserts it
    (ack(payload=b"x" * 2800, flags="PA"), 1400),  # a GSO frame
    (ack([TS, TS, TS] + [("NOP", None)] * 6), 0),  # 36 option bytes: no room for 8 more
], ids=["data", "gso", "no-room"])
def test_what_cannot_take_toa_here_goes_to_the_engine_unchanged(fp, frame, gso):
    f = marked(fp)
    before = fp.counters.read()
    assert run(fp, frame, gso) == (TC_ACT_OK, frame)
    after = fp.counters.read()
    assert after["punt_toa"] == before["punt_toa"] + 1 and after["hit"] == before["hit"]
    value = stored(fp, f)
    assert value[FIELD["flags"]] & F_TOA and value[FIELD["tcp_state"]] == tcpstate.SYN_RECV
    assert value[FIELD["packets"]] == 0 and fp.events.read() == []


@pytest.mark.parametrize("flags", ["S", "RA", "F"])
def test_syn_rst_and_segments_without_ack_do_not_take_it(fp, flags):
    f = marked(fp, tcpstate.ESTABLISHED)
    verdict, out = run(fp, ack(flags=flags))
    if verdict == TC_ACT_REDIRECT:
        assert not [o for o in Ether(out)[TCP].options if o[0] == 254]
    assert fp.flows.lookup(f.pack_key()) is None or stored(fp, f)[FIELD["flags"]] & F_TOA


def test_a_full_event_ring_sends_the_ack_to_the_engine_unchanged_and_marked():
    """The insertion is reported: with no room on the ring the ACK goes to the engine as it came, the mark
    and the state kept (the engine inserts TOA and makes the change)."""
    with FastPath(pin_root=None, max_flows=64, event_bytes=4096) as prog:
        frame = ack()
        verdicts = []
        for _ in range(80):  # 64 bytes a record: 4 KB hold 64
            f = marked(prog)
            verdict, out = run(prog, frame)
            verdicts.append(verdict)
            if verdict == TC_ACT_OK:
                assert out == frame
                value = stored(prog, f)
                assert value[FIELD["flags"]] & F_TOA and value[FIELD["tcp_state"]] == tcpstate.SYN_RECV
            else:
                assert [o for o in Ether(out)[TCP].options if o[0] == 254] == [(254, TOA)]
        counters = prog.counters.read()
        assert counters["punt_ring_full"] == verdicts.count(TC_ACT_OK) > 0
        assert counters["tcp_event"] == verdicts.count(TC_ACT_REDIRECT) == len(prog.events.read()) >= 40
