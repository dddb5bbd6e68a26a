"""Sync messages on the wire: hand-built bytes (ipvs.md §5 layouts) decode; round trips; bad input rejected."""

from __future__ import annotations

import random
import socket

import pytest

from pylvs.ipvs_uapi import CONN_F_IN_SEQ
from pylvs.sync import proto
from pylvs.sync.proto import Message, Rejected, SyncConn

CADDR, VADDR, DADDR = (socket.inet_aton(a) for a in ("203.0.113.10", "203.0.113.100", "192.0.2.11"))

# One IPv4 connection, field by field: type 0, TCP, ver_size = version 0 | 36 bytes, flags INACTIVE|MASQ,
# state ESTABLISHED, ports 54321 -> 80 -> 8080, fwmark 0, timeout 900 s, then the three addresses.
CONN_V4_BYTES = bytes([
    0x00, 0x06, 0x00, 0x24,
    0x00, 0x00, 0x01, 0x00,
    0x00, 0x01, 0xD4, 0x31,
    0x00, 0x50, 0x1F, 0x90,
    0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x03, 0x84,
    203, 0, 113, 10,
    203, 0, 113, 100,
    192, 0, 2, 11,
])


def v1_header(syncid: int, size: int, nr_conns: int) -> bytes:
    return bytes([0, syncid, size >> 8, size & 0xFF, nr_conns, 1, 0, 0])


def test_a_hand_built_version_1_message_decodes():
    data = v1_header(7, 8 + 36, 1) + CONN_V4_BYTES
    msg = proto.decode(data)
    assert isinstance(msg, Message) and (msg.version, msg.syncid) == (1, 7)
    (c,) = msg.conns
    assert (c.protocol, c.flags, c.state, c.fwmark, c.timeout, c.ipv6) == (6, 0x100, 1, 0, 900, False)
    assert (c.caddr, c.vaddr, c.daddr) == (CADDR, VADDR, DADDR)
    assert (c.cport, c.vport, c.dport) == (b"\xd4\x31", b"\x00\x50", b"\x1f\x90")
    assert c.seq is None and not c.pe_data and not c.unknown_param


def test_version_1_options_padding_and_several_connections():
    # First conn: + SEQ_DATA (type 1, len 24, six be32) + PE_NAME "sip" (type 3, len 3): 36+26+5 = 67 bytes,
    # padded with one zero byte; the second connection starts 4-byte aligned.
    seq = b"".join(i.to_bytes(4, "big") for i in (1, 2, 3, 4, 5, 6))
    first = bytearray(CONN_V4_BYTES)
    first[2:4] = (36 + 26 + 5).to_bytes(2, "big")
    first += bytes([1, 24]) + seq + bytes([3, 3]) + b"sip" + b"\0"
    second = bytearray(CONN_V4_BYTES)
    second[1] = 17  # UDP
    second[8:10] = b"\0\0"
    body = bytes(first) + bytes(second)
    msg = proto.decode(v1_header(0, 8 + len(body), 2) + body)
    assert isinstance(msg, Message)
    a, b = msg.conns
    assert a.seq == (1, 2, 3, 4, 5, 6) and a.pe_name == b"sip" and a.pe_data == b""
    assert (b.protocol, b.state, b.seq) == (17, 0, None)


def test_an_unknown_optional_option_is_skipped_and_a_mandatory_one_marks_the_connection():
    optional = bytearray(CONN_V4_BYTES)
    optional[2:4] = (36 + 4).to_bytes(2, "big")
    optional += bytes([0x40 | 9, 2, 0xAA, 0xBB])
    msg = proto.decode(v1_header(0, 8 + 40, 1) + optional)
    assert isinstance(msg, Message) and msg.conns[0].unknown_param == 0
    mandatory = bytearray(optional)
    mandatory[36] = 9
    msg = proto.decode(v1_header(0, 8 + 40, 1) + mandatory)
    assert isinstance(msg, Message) and msg.conns[0].unknown_param == 9


def test_an_ipv6_connection_decodes():
    conn = bytes([0x01, 6, 0x00, 72]) + bytes(4) + bytes([0, 1, 0, 1, 0, 2, 0, 3]) + bytes(8)
    conn += socket.inet_pton(socket.AF_INET6, "2001:db8::1") + socket.inet_pton(socket.AF_INET6, "2001:db8::2")
    conn += socket.inet_pton(socket.AF_INET6, "2001:db8::3")
    msg = proto.decode(v1_header(0, 8 + 72, 1) + conn)
    assert isinstance(msg, Message)
    (c,) = msg.conns
    assert c.ipv6 and c.daddr == socket.inet_pton(socket.AF_INET6, "2001:db8::3")


def test_a_hand_built_version_0_message_decodes_with_and_without_sequence_data():
    # header: nr_conns 2, syncid 3, size 4 + 24 + 48
    simple = bytes([0, 6, 0xD4, 0x31, 0, 80, 0x1F, 0x90, 203, 0, 113, 10, 203, 0, 113, 100, 192, 0, 2, 11,
                    0x00, 0x00, 0x00, 0x04])  # flags MASQ, state FIN_WAIT
    with_seq = bytearray(simple)
    with_seq[20:22] = b"\x04\x00"  # IN_SEQ: sequence data follows
    with_seq += b"".join(i.to_bytes(4, "big") for i in range(10, 16))
    data = bytes([2, 3, 0, 4 + 24 + 48]) + simple + bytes(with_seq)
    msg = proto.decode(data)
    assert isinstance(msg, Message) and (msg.version, msg.syncid) == (0, 3)
    a, b = msg.conns
    assert (a.protocol, a.state, a.flags, a.timeout, a.fwmark, a.seq) == (6, 4, 0, 0, 0, None)
    assert (a.caddr, a.vaddr, a.daddr) == (CADDR, VADDR, DADDR)
    assert b.seq == (10, 11, 12, 13, 14, 15)


def sample_conns() -> list[SyncConn]:
    return [
        SyncConn(6, CADDR, b"\xd4\x31", VADDR, b"\0\x50", DADDR, b"\x1f\x90", 0x100, 1, 0, 900),
        SyncConn(17, CADDR, b"\x10\x00", VADDR, b"\0\x35", DADDR, b"\x14\xe9", 0x180, 0, 7, 300,
                 seq=(1, 2, 3, 4, 5, 6)),
        SyncConn(6, CADDR[:3] + b"\0", b"\0\0", VADDR, b"\0\x50", DADDR, b"\x1f\x90", 0x1100, 1, 0, 360,
                 pe_data=b"callid", pe_name=b"sip"),
    ]


@pytest.mark.parametrize("version", [1, 0])
def test_encode_and_decode_round_trip(version):
    conns = sample_conns()
    if version == 0:  # no fwmark, timeout or persistence-engine data in version 0
        for c in conns:
            c.fwmark = c.timeout = 0
            c.pe_data = c.pe_name = b""
        conns[1].flags |= CONN_F_IN_SEQ
    msg = proto.decode(proto.encode_message(conns, syncid=9, version=version))
    assert msg == Message(version, 9, conns)


def test_the_masters_packer_matches_the_general_encoder():
    c = sample_conns()[0]
    packed = proto.pack_v1(c.protocol, c.flags, c.state, c.cport, c.vport, c.dport, c.fwmark, c.timeout,
                           c.caddr, c.vaddr, c.daddr)
    assert packed == proto.encode_conn(c) == CONN_V4_BYTES
    packed0 = proto.pack_v0(c.protocol, c.flags, c.state, c.cport, c.vport, c.dport, c.caddr, c.vaddr, c.daddr)
    assert packed0 == proto.encode_conn(c, 0)


def good() -> bytes:
    return proto.encode_message(sample_conns()[:2])


def with_size(data: bytes) -> bytes:
    return data[:2] + len(data).to_bytes(2, "big") + data[4:]


def patched(data: bytes, offset: int, value: bytes) -> bytes:
    return data[:offset] + value + data[offset + len(value):]


BAD = {  # what the decoder must reject, and why
    "short": (b"\0\0\0", "short"),
    "size mismatch": (good() + b"\0\0\0\0", "size_mismatch"),
    "count beyond the data": (patched(good(), 4, b"\x03"), "truncated"),
    "conn shorter than its struct": (patched(with_size(good()[:8 + 36]), 8 + 2, b"\x00\x20"), "conn_size"),
    "conn size beyond the message": (patched(with_size(good()[:8 + 36]), 8 + 2, b"\x00\x28"), "conn_size"),
    "version bits in ver_size": (patched(good(), 8 + 2, b"\x10\x24"), "conn_version"),
    "conn type 2": (patched(good(), 8, b"\x02"), "conn_type"),
    "zero-length option": (patched(good(), 8 + 36 + 36 + 1, b"\x00"), "option_length"),
    "option overruns the conn": (patched(good(), 8 + 36 + 36 + 1, b"\x30"), "option_length"),
    "sequence data of the wrong length": (with_size(
        v1_header(0, 0, 1) + patched(CONN_V4_BYTES, 2, b"\x00\x28") + bytes([1, 2, 0, 0])), "option_length"),
    "option twice": (with_size(v1_header(0, 0, 1) + patched(CONN_V4_BYTES, 2, b"\x00\x2c")
                               + bytes([3, 2]) + b"ab" + bytes([3, 2]) + b"cd"), "option_twice"),
    "name too long": (with_size(v1_header(0, 0, 1) + patched(CONN_V4_BYTES, 2, (36 + 19).to_bytes(2, "big"))
                                + bytes([3, 17]) + b"x" * 17 + b"\0"), "option_length"),
    "trailing bytes": (with_size(v1_header(0, 0, 1) + CONN_V4_BYTES + bytes(4)), "trailing_bytes"),
    "v0 conn cut short": (bytes([1, 0, 0, 20]) + bytes(16), "truncated"),
    "v0 sequence data cut short": (
        with_size(bytes([1, 0, 0, 0]) + bytes(20) + b"\x04\x00\0\0" + bytes(8)), "truncated"),
    "v0 trailing bytes": (with_size(bytes([1, 0, 0, 0]) + bytes(24) + bytes(2)), "trailing_bytes"),
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_malformed_messages_are_rejected(name):
    data, reason = BAD[name]
    assert proto.decode(data) == Rejected(reason)


def test_an_empty_message_is_valid():
    assert proto.decode(v1_header(0, 8, 0)) == Message(1, 0, [])


def test_the_decoder_never_raises_on_mutated_input():
    rng = random.Random(1)
    seeds = [good(), proto.encode_message(sample_conns(), version=1), proto.encode_message(sample_conns()[:1], 0, 0)]
    for _ in range(3000):
        data = bytearray(rng.choice(seeds))
        for _ in range(rng.randint(1, 4)):
            op = rng.random()
            if op < 0.5 and data:
                data[rng.randrange(len(data))] = rng.randrange(256)
            elif op < 0.75:
                del data[rng.randrange(len(data) + 1):]
            else:
                data += bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
        result = proto.decode(bytes(data))
        assert isinstance(result, Message | Rejected)
