"""The SIP persistence engine (--pe sip) and one-packet scheduling (-o), as ip_vs_pe_sip.c and IPVS do them.

Call-ID offsets below are worked out by hand: the kernel starts its search `dataoff` (IP + UDP header
lengths, 28) bytes into the payload, and a header only counts at the start of a line.
"""

from __future__ import annotations

import socket

from scapy.layers.inet import IP, UDP

from pylvs.control.api import encode_conn
from pylvs.engine.pe_sip import call_id
from pylvs.engine.services import SVC_F_ONEPACKET, SVC_F_PERSISTENT, pack_ip
from pylvs.ipvsadm.format import Fmt, format_conns
from pylvs.sync import proto
from pylvs.sync.backup import SyncBackup
from pylvs.sync.master import SyncMaster
from tests.unit.director import frame, from_client, make_engine, parse

INVITE = "INVITE sip:bob@example.com SIP/2.0\r\n"  # 36 bytes: longer than the 28 skipped


def sip(call: str | None, first: str = INVITE, extra: str = "") -> bytes:
    lines = first + "Via: SIP/2.0/UDP 192.0.2.100:5060\r\n"
    if call is not None:
        lines += f"Call-ID: {call}\r\n"
    return (lines + extra + "CSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n").encode()


# -- finding the Call-ID ------------------------------------------------------------------------


def test_call_id_full_and_compact_names_any_case():
    assert call_id(sip("a84b4c76e66710@pc33.example.com"), 28) == b"a84b4c76e66710@pc33.example.com"
    assert call_id(INVITE.encode() + b"i: abc123\r\n\r\n", 28) == b"abc123"
    assert call_id(INVITE.encode() + b"cAlL-iD:\t  x.y-z\r\n", 28) == b"x.y-z"
    assert call_id(INVITE.encode() + b"Call-ID:\r\n  folded\r\n", 28) == b"folded"  # continuation line


def test_call_id_rules_the_kernel_applies():
    assert call_id(sip(None), 28) is None
    assert call_id(INVITE.encode() + b"Call-ID: abc", 28) is None  # no line terminator after the value
    assert call_id(INVITE.encode() + b"Call-ID: abc def\r\n", 28) is None  # not followed by CR or LF
    assert call_id(INVITE.encode() + b"Call-ID: " + b"x" * 256 + b"\r\n", 28) is None  # over 255 bytes
    assert call_id(INVITE.encode() + b"Call-ID: " + b"x" * 255 + b"\r\n", 28) == b"x" * 255
    assert call_id(INVITE.encode() + b"If: 1\r\nid: 2\r\n", 28) is None  # compact `i` runs into a letter
    assert call_id(INVITE.encode() + b"Call-ID: a@\r\n", 28) is None  # a domain part must follow `@`
    # the first 28 bytes of the payload are skipped: a header there is not seen
    assert call_id(b"X\r\nCall-ID: early\r\n" + b"p" * 40 + b"\r\n", 28) is None
    assert call_id(b"X\r\nCall-ID: early\r\n" + b"p" * 40 + b"\r\n", 0) == b"early"
    # a Call-ID header that ends at its line: the search stops there
    assert call_id(INVITE.encode() + b"Call-ID: \r\n\r\nCall-ID: late\r\n", 28) is None
    # one whose value starts with no word character: the search goes on from dataoff + its offset (45),
    # so a second Call-ID at offset 91 is found and one at offset 51 is not
    bad = INVITE.encode() + b"Call-ID: ;x\r\n"
    assert call_id(bad + b"q" * 40 + b"\r\nCall-ID: late\r\n", 28) == b"late"
    assert call_id(bad + b"\r\nCall-ID: near\r\n", 28) is None


def test_call_id_never_fails_on_garbage():
    for payload in (b"", b"\r", b"\r\n", b"\n\ni", b"\r\nCall-ID", b"\r\nCall-ID:", b"\r\ni:", b"\xff" * 80):
        assert call_id(payload, 0) is None


# -- through the engine -------------------------------------------------------------------------


def sip_engine(one_packet=True, timeout=60):
    e = make_engine(proto=17, vport=5060, rport=5060)
    svc = next(iter(e.table))
    svc.flags |= SVC_F_PERSISTENT | (SVC_F_ONEPACKET if one_packet else 0)
    svc.timeout, svc.netmask, svc.pe = timeout, pack_ip("255.255.255.255"), "sip"
    return e, svc


def send(e, t, payload: bytes, sport=5060, src="192.0.2.100"):
    out = e.process(frame(from_client(UDP(sport=sport, dport=5060) / payload, src=src)), 1, t)
    return parse(out[0][1])[IP].dst if out else None


def test_datagrams_of_one_call_reach_one_real_server_and_calls_spread():
    e, svc = sip_engine()
    first = [send(e, 0, sip(f"call-{n}")) for n in range(3)]  # one client port, three calls: rr
    assert len(set(first)) == 3
    again = [send(e, 1, sip(f"call-{n}", first="BYE sip:bob@example.com SIP/2.0\r\n")) for n in range(3)]
    assert again == first
    # one-packet scheduling keeps no connection, only the three templates keyed by Call-ID
    tmpls = [c for c in e.conns.conns()]
    assert len(tmpls) == 3 and all(c.template for c in tmpls)
    assert sorted(c.pe_data for c in tmpls) == [b"call-0", b"call-1", b"call-2"]
    assert all(d.inactconns == d.activeconns == 0 and d.persistconns == 1 for d in svc.dests)
    assert svc.stats.conns == 6 and svc.stats.inpkts == 6


def test_a_datagram_without_call_id_is_dropped_and_counted():
    e, _ = sip_engine()
    assert send(e, 0, b"hello, no SIP here") is None
    assert e.drops["pe_no_callid"] == 1 and len(e.conns) == 0


def test_without_one_packet_scheduling_the_udp_connection_decides():
    e, _ = sip_engine(one_packet=False)
    a = send(e, 0, sip("one"))
    assert send(e, 0, sip("two")) == a  # same client port: the connection entry, not the Call-ID
    assert send(e, 0, sip("two"), sport=5061) != a  # a new connection: the Call-ID's own template


def test_the_listing_shows_the_engine_and_call_id_as_ipvsadm():
    e, _ = sip_engine()
    send(e, 0, sip("abc@host"))
    (tmpl,) = list(e.conns.conns())
    row = encode_conn(tmpl, 0)
    assert row["pe_name"] == "sip" and row["pe_data"] == "abc@host"
    text = format_conns([row], Fmt.NUMERIC | Fmt.PERSISTENTCONN)
    assert text.splitlines()[2] == ("UDP 01:00  NONE        192.0.2.100:0      192.0.2.1:5060     "
                                    f"{tmpl.daddr[0]}.{tmpl.daddr[1]}.{tmpl.daddr[2]}.{tmpl.daddr[3]}:5060   "
                                    "sip                abc@host")


def test_templates_travel_with_their_call_id_in_the_sync_protocol():
    e, _ = sip_engine()
    rip = send(e, 0, sip("sync-me"))
    messages: list[bytes] = []
    master = SyncMaster(messages.append, syncid=0)
    for conn in e.conns.conns():
        master.add(conn)
    master.flush()
    (msg,) = messages
    decoded = proto.decode(msg)
    (rec,) = decoded.conns
    assert rec.template and rec.pe_data == b"sync-me" and rec.pe_name == b"sip"
    assert len(msg) % 4 == 0
    backup_engine, _ = sip_engine()
    SyncBackup(backup_engine, syncid=0).receive(msg, 0)
    (tmpl,) = list(backup_engine.conns.conns())
    assert tmpl.pe_data == b"sync-me" and socket.inet_ntoa(tmpl.daddr) == rip
    assert send(backup_engine, 1, sip("sync-me")) == rip  # the backup sends the call where the master did
