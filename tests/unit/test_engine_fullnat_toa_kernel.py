"""FULLNAT TOA delivered by the kernel fast path (FLOW_F_TOA, pylvs_fastpath.bpf.c insert_toa): the engine
marks the IPv4 request recipe instead of keeping it engine-only, learns from the kernel's report of the
client's first ACK that TOA went out (`kernel_sent_toa` via Engine.tcp_transition) and never inserts a
second one; over IPv6 TOA stays the engine's."""

from __future__ import annotations

from scapy.layers.inet import TCP

from pylvs.datapath.bpf.offload import FlowOffload
from pylvs.engine import tcpstate
from pylvs.engine.events import ConnEvent, ConnEventKind
from pylvs.engine.flow import F_ENGINE_ONLY, F_TOA, VALUE, VALUE_FIELDS
from pylvs.engine.forward.fullnat import ClientAddress
from pylvs.engine.services import pack_ip
from tests.unit.director import CLIENT, RIPS, frame, from_client, from_rs, parse
from tests.unit.test_engine_fullnat import fullnat_engine
from tests.unit.test_engine_fullnat_kernel import LIPS, adopt, key
from tests.unit.test_engine_ipv6 import handshake as handshake6
from tests.unit.test_engine_ipv6 import make_fullnat6
from tests.unit.test_fastpath_offload import FakeFlowMap

ACK, SYN, RST = 0x10, 0x02, 0x04
FLAGS = [name for name, _, _ in VALUE_FIELDS].index("flags")


def toa_options(pkt) -> list[bytes]:
    return [o[1] for o in pkt[TCP].options if o[0] == 254]


def engine_made():
    """An engine-scheduled connection after its SYN and the server's SYN+ACK (forwarded by the engine)."""
    e = fullnat_engine()
    _, buf = e.process(frame(from_client(TCP(sport=40000, dport=80, flags="S", seq=1000))), 1, 0)[0]
    conn = next(iter(e.conns.conns()))
    return e, conn, parse(buf)[TCP].sport


def test_the_request_recipe_is_marked_not_engine_only_and_the_reply_recipe_is_plain():
    _, conn, _ = engine_made()
    assert isinstance(conn.slow, ClientAddress) and conn.slow.kind == "toa"
    assert conn.in_flow.flags & F_TOA
    assert not conn.in_flow.flags & F_ENGINE_ONLY and not conn.out_flow.flags & (F_ENGINE_ONLY | F_TOA)


def test_the_kernels_report_of_the_first_ack_clears_toa_and_the_engine_inserts_none_after():
    e, conn, lport = engine_made()
    sub = e.subscribe(services=False, conns=True)
    e.tcp_transition(conn.out_key, SYN | ACK, 0.1)  # (a SYN+ACK the kernel forwarded: not a request)
    assert conn.in_flow.flags & F_TOA and conn.slow is not None
    found = e.tcp_transition(conn.in_key, ACK, 0.2)  # the client's ACK, which took the kernel's TOA
    assert found == (conn, tcpstate.SYN_RECV) and conn.state == tcpstate.ESTABLISHED
    assert conn.slow is None and not conn.in_flow.flags & (F_TOA | F_ENGINE_ONLY)
    assert ConnEventKind.FLOWS not in [ev.kind for ev in sub if isinstance(ev, ConnEvent)]  # the kernel's is right
    # A later client segment the engine forwards (evicted recipe, a punt) carries no second TOA.
    for flags, payload in (("A", b""), ("PA", b"GET /")):
        out = e.process(frame(from_client(TCP(sport=40000, dport=80, flags=flags, seq=1001, ack=5001) / payload)),
                        1, 0.3)
        got = parse(out[0][1])
        assert toa_options(got) == [] and got[TCP].dataofs == 5 and got[TCP].sport == lport
    # Recipes written again (a next hop's MAC moved) carry no mark.
    assert not VALUE.unpack(conn.in_flow.pack_value())[FLAGS] & F_TOA


def test_a_syn_or_rst_report_or_one_without_ack_leaves_toa_pending():
    e, conn, _ = engine_made()
    for flags in (SYN, RST | ACK, 0x01):
        assert e.tcp_transition(conn.in_key, flags, 0.1) is not None
        if conn.dead:
            break
        assert conn.slow is not None and conn.in_flow.flags & F_TOA
    e2, conn2, _ = engine_made()
    e2.tcp_transition(conn2.in_key, SYN, 0.1)  # a retransmitted SYN: still pending
    assert conn2.slow is not None and conn2.in_flow.flags & F_TOA


def test_the_engine_forwarding_the_ack_itself_inserts_toa_once_and_clears_the_mark():
    e, conn, _ = engine_made()
    out = parse(e.process(frame(from_client(TCP(sport=40000, dport=80, flags="A", seq=1001, ack=5001))), 1, 0.1)[0][1])
    assert toa_options(out) == [(40000).to_bytes(2, "big") + pack_ip(CLIENT)]
    assert conn.slow is None and not conn.in_flow.flags & F_TOA
    assert e.tcp_transition(conn.in_key, ACK, 0.2) is not None  # a later kernel report changes nothing
    assert conn.slow is None


def test_a_kernel_made_connection_is_adopted_toa_pending_like_the_template():
    e = fullnat_engine()
    conn = adopt(e, LIPS[0], 50010)
    assert isinstance(conn.slow, ClientAddress) and conn.in_flow.flags & F_TOA
    e.tcp_transition(conn.out_key, SYN | ACK, 0.1)
    e.tcp_transition(conn.in_key, ACK, 0.2)
    assert conn.state == tcpstate.ESTABLISHED and conn.slow is None and not conn.in_flow.flags & F_TOA


def test_ipv6_toa_stays_engine_only_until_the_engine_sent_it():
    engine = make_fullnat6()
    handshake6(engine)
    conn = next(iter(engine.conns.conns()))
    assert conn.in_flow.flags & F_ENGINE_ONLY and not conn.in_flow.flags & F_TOA
    engine.tcp_transition(conn.in_key, ACK, 0.2)  # (not reported by a kernel that never forwards it: no effect)
    assert conn.slow is not None


def test_the_engine_sending_toa_itself_rewrites_the_recipe_the_kernel_holds_marked():
    """A kernel-made connection whose first ACK the program punted (data, a full ring): the engine inserts
    TOA, and its FLOWS event has the kernel's marked request recipe written again without the mark (else
    the kernel would insert a second TOA into the next ACK)."""
    e = fullnat_engine()
    fake = FakeFlowMap()
    marks: dict[bytes, int] = {}
    put = fake.put

    def put_marked(entry) -> None:
        marks[entry.pack_key()] = entry.flags
        put(entry)

    fake.put = put_marked
    offload = FlowOffload(e, fake)
    svc = next(iter(e.table))
    conn = e.adopt_kernel(svc, svc.dests[0], key(), 0.0, offload.events,  # as FlowOffload._adopt reports it
                          local=(pack_ip(LIPS[0]), (50020).to_bytes(2, "big")))
    for f in (conn.in_flow, conn.out_flow):
        fake.put(f)  # what the program wrote from the template
    offload.adopt(conn, [(f, f.pack_value()) for f in (conn.in_flow, conn.out_flow)])
    assert marks[conn.in_flow.pack_key()] & F_TOA
    lport = int.from_bytes(conn.lport, "big")
    e.process(frame(from_rs(RIPS[0], TCP(sport=8080, dport=lport, flags="SA"), dst=LIPS[0])), 2, 0.1)
    out = e.process(frame(from_client(TCP(sport=40000, dport=80, flags="PA", seq=1001, ack=5001) / b"GET /")),
                    1, 0.2)
    assert toa_options(parse(out[0][1])) == [(40000).to_bytes(2, "big") + pack_ip(CLIENT)]
    offload.drain(0.3, 1)
    assert conn.state == tcpstate.ESTABLISHED and conn.slow is None
    assert conn.in_flow.pack_key() in fake.entries and not marks[conn.in_flow.pack_key()] & F_TOA
