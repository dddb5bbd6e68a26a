"""SCTP services (ip_vs_proto_sctp.c): scheduling on INIT, the IPVS SCTP state table, active counts,
and the CRC32c through NAT, checked with scapy's own SCTP decoder and CRC."""

from __future__ import annotations

from scapy.layers.inet import IP
from scapy.layers.l2 import Ether
from scapy.layers.sctp import (
    SCTP,
    SCTPChunkAbort,
    SCTPChunkCookieAck,
    SCTPChunkCookieEcho,
    SCTPChunkData,
    SCTPChunkInit,
    SCTPChunkInitAck,
    SCTPChunkShutdown,
    SCTPChunkShutdownAck,
    SCTPChunkShutdownComplete,
)

from pylvs.engine import sctpstate
from pylvs.engine.services import Method
from tests.unit.director import CLIENT, VIP, frame, from_client, from_rs, make_engine, parse

SCTP_PROTO = 132


def crc_ok(pkt: Ether) -> bool:
    """scapy recomputes the CRC32c of the packet as it arrived and compares."""
    fresh = Ether(bytes(pkt))
    fresh[SCTP].chksum = None
    return Ether(bytes(fresh))[SCTP].chksum == pkt[SCTP].chksum


def engine(method=Method.MASQ, rport=3869):
    return make_engine(method=method, proto=SCTP_PROTO, vport=3868, rport=rport, rips=["10.1.0.11"])


def client(e, t, chunk, sport=40000, tag=0):
    out = e.process(frame(from_client(SCTP(sport=sport, dport=3868, tag=tag) / chunk)), 1, t)
    return parse(out[0][1]) if out else None


def server(e, t, chunk, sport=3869, dport=40000, tag=0):
    out = e.process(frame(from_rs("10.1.0.11", SCTP(sport=sport, dport=dport, tag=tag) / chunk)), 2, t)
    return parse(out[0][1]) if out else None


def conn_of(e):
    (conn,) = e.conns.conns()
    return conn


def test_nat_association_through_the_state_table_with_crc32c_rewritten():
    e = engine()
    dest = e.table.find(SCTP_PROTO, bytes([192, 0, 2, 1]), 3868).dests[0]
    out = client(e, 0, SCTPChunkInit(init_tag=7, a_rwnd=65535, n_out_streams=1, n_in_streams=1, init_tsn=1))
    assert out[IP].dst == "10.1.0.11" and out[SCTP].dport == 3869 and out[SCTP].sport == 40000
    assert crc_ok(out) and out[SCTPChunkInit].init_tag == 7
    conn = conn_of(e)
    assert conn.state_name() == "INIT1" and conn.timeout == 4 and dest.inactconns == 1
    back = server(e, 0.1, SCTPChunkInitAck(init_tag=9, a_rwnd=65535, n_out_streams=1, n_in_streams=1,
                                           init_tsn=1), tag=7)
    assert (back[IP].src, back[IP].dst, back[SCTP].sport, back[SCTP].dport) == (VIP, CLIENT, 3868, 40000)
    assert crc_ok(back) and conn.state_name() == "C-SENT"
    client(e, 0.2, SCTPChunkCookieEcho(cookie=b"c" * 16), tag=9)
    assert conn.state_name() == "C-REPLIED"
    server(e, 0.3, SCTPChunkCookieAck(), tag=7)
    assert conn.state_name() == "ESTABLISHED" and conn.timeout == 900
    assert (dest.activeconns, dest.inactconns) == (1, 0)
    data = client(e, 1, SCTPChunkData(tsn=1, data=b"hello"), tag=9)
    assert crc_ok(data) and bytes(data[SCTPChunkData].data) == b"hello"
    client(e, 2, SCTPChunkShutdown(), tag=9)
    assert conn.state_name() == "S-RECEIVED" and (dest.activeconns, dest.inactconns) == (0, 1)
    server(e, 2.1, SCTPChunkShutdownAck(), tag=7)
    assert conn.state_name() == "S-ACK-SENT"
    client(e, 2.2, SCTPChunkShutdownComplete(), tag=9)
    assert conn.state_name() == "CLOSED" and conn.timeout == 61
    # a new INIT on the closed association schedules it afresh (conn_reuse_mode 1)
    client(e, 3, SCTPChunkInit(init_tag=11, a_rwnd=65535, n_out_streams=1, n_in_streams=1, init_tsn=1))
    assert conn.dead and conn_of(e).state_name() == "INIT1"


def test_only_an_init_starts_an_association():
    e = engine()
    assert client(e, 0, SCTPChunkData(tsn=1, data=b"x")) is None
    assert client(e, 0, SCTPChunkAbort()) is None
    assert e.drops["no_conn"] == 2 and len(e.conns) == 0
    e.settings.sloppy_sctp = True
    assert client(e, 0, SCTPChunkAbort()) is None  # never on an ABORT
    assert client(e, 0, SCTPChunkData(tsn=1, data=b"x")) is not None
    assert conn_of(e).state_name() == "ESTABLISHED"  # NONE + DATA in the table


def test_same_ports_keep_the_crc_as_it_came():
    """sctp_dnat_handler recomputes only when the port changes: a packet with a wrong CRC stays wrong."""
    e = engine(rport=3868)
    pkt = from_client(SCTP(sport=40000, dport=3868, chksum=0x1234) / SCTPChunkInit(
        init_tag=7, a_rwnd=65535, n_out_streams=1, n_in_streams=1, init_tsn=1))
    (out,) = e.process(frame(pkt), 1, 0)
    assert parse(out[1])[SCTP].chksum == 0x1234 and parse(out[1])[IP].dst == "10.1.0.11"


def test_direct_routing_sees_only_the_client_side():
    e = engine(method=Method.ROUTE)
    out = client(e, 0, SCTPChunkInit(init_tag=7, a_rwnd=65535, n_out_streams=1, n_in_streams=1, init_tsn=1))
    assert out[IP].dst == VIP and out[SCTP].dport == 3868 and crc_ok(out)
    client(e, 0.1, SCTPChunkCookieEcho(cookie=b"c" * 16), tag=9)
    conn = conn_of(e)
    assert conn.state_name() == "ESTABLISHED"  # INPUT_ONLY: INIT1 + COOKIE ECHO
    assert conn.in_flow.flags & 1 and not conn.in_flow.offloadable  # engine-only: no CRC32c in BPF


def test_event_of_a_cookie_echo_with_an_abort_bundled_is_the_abort():
    echo = bytes(SCTPChunkCookieEcho(cookie=b"abcdef"))  # 10 bytes, padded to 12
    assert sctpstate.event(echo) == sctpstate.E_COOKIE_ECHO
    assert sctpstate.event(echo + bytes(SCTPChunkAbort())) == sctpstate.E_ABORT
    assert sctpstate.event(b"") == sctpstate.E_DATA and sctpstate.event(bytes([200, 0, 0, 4])) == sctpstate.E_DATA
