"""ICMP messages the director originates: errors about a packet it will not forward, echo replies."""

from __future__ import annotations

import struct

from pylvs.packet import checksum
from pylvs.packet.layout import PROTO_ICMP

DEST_UNREACH = 3
SOURCE_QUENCH = 4
TIME_EXCEEDED = 11
ECHO_REQUEST = 8
ECHO_REPLY = 0
CODE_PORT_UNREACH = 3
CODE_FRAG_NEEDED = 4
CODE_TTL_EXCEEDED = 0
ERROR_TYPES = (DEST_UNREACH, SOURCE_QUENCH, TIME_EXCEEDED)
# What icmp_send counts as an error (never answered with another): these, and any unknown type.
_ERRORS = frozenset((DEST_UNREACH, SOURCE_QUENCH, 5, TIME_EXCEEDED, 12))
_LAST_KNOWN_TYPE = 18
MAX_ERROR_LEN = 576  # RFC 1812: an ICMP error, with its quote, fits in 576 bytes
IPTOS_PREC_INTERNETCONTROL = 0xC0
IPTOS_TOS_MASK = 0x1E

_ident = 0


def ipv4_header(src: bytes, dst: bytes, proto: int, payload_len: int, ttl: int = 64, tos: int = 0,
                df: bool = False) -> bytes:
    global _ident
    _ident = (_ident + 1) & 0xFFFF
    hdr = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, tos, 20 + payload_len, _ident,
                                0x4000 if df else 0, ttl, proto, 0, src, dst))
    struct.pack_into("!H", hdr, 10, checksum.checksum(hdr))
    return bytes(hdr)


def error(src: bytes, original_ip: bytes | bytearray | memoryview, icmp_type: int, code: int,
          mtu: int = 0) -> bytes:
    """An IPv4 ICMP error from `src` about `original_ip` (given from its IP header on), as icmp_send
    makes it: TTL 64, no DF, TOS the original's TOS bits with the internetwork-control precedence."""
    quote = bytes(original_ip[: MAX_ERROR_LEN - 28])
    body = bytearray(struct.pack("!BBHHH", icmp_type, code, 0, 0, mtu)) + quote
    struct.pack_into("!H", body, 2, checksum.checksum(body))
    dst = bytes(original_ip[12:16])
    tos = original_ip[1] & IPTOS_TOS_MASK | IPTOS_PREC_INTERNETCONTROL
    return ipv4_header(src, dst, PROTO_ICMP, len(body), tos=tos) + bytes(body)


def is_error_about_error(original_ip: bytes | bytearray | memoryview) -> bool:
    """Whether `original_ip` is itself an ICMP error, about which icmp_send never answers."""
    if original_ip[9] != PROTO_ICMP:
        return False
    at = (original_ip[0] & 0x0F) << 2
    if at >= len(original_ip):
        return True  # no type to read: not answered either
    itype = original_ip[at]
    return itype > _LAST_KNOWN_TYPE or itype in _ERRORS


def echo_reply(request_ip: bytes | bytearray | memoryview, ihl: int, total_len: int) -> bytes | None:
    """The echo reply to an IPv4 echo request, or None if the request is not one."""
    body = bytearray(request_ip[ihl:total_len])
    if len(body) < 8 or body[0] != ECHO_REQUEST or checksum.ones_sum(body) != 0xFFFF:
        return None
    body[0] = ECHO_REPLY
    struct.pack_into("!H", body, 2, 0)
    struct.pack_into("!H", body, 2, checksum.checksum(body))
    src, dst = bytes(request_ip[16:20]), bytes(request_ip[12:16])
    return ipv4_header(src, dst, PROTO_ICMP, len(body)) + bytes(body)
