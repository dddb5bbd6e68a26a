"""VRRP advertisements on the wire: version 2 (RFC 3768) and version 3 for IPv4 (RFC 5798).

    0                   1                   2                   3
   |Version| Type  | Virtual Rtr ID|   Priority    | Count IPvX Addr|
   v2: | Auth Type   | Adver Int (s) |   Checksum    |      v3: |(rsvd)| Max Adver Int (cs) | Checksum |
   IPvX addresses..., then for v2 8 bytes of authentication data (keepalived's PASS: the password).

The v2 checksum covers the VRRP message alone; the v3 one starts from the IPv4 pseudo-header
(source, destination, protocol 112, VRRP length), as RFC 5798 §5.2.8 says and keepalived does.
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass

from pylvs.packet.checksum import checksum, pseudo_header_sum

IPPROTO_VRRP = 112
VRRP_GROUP = "224.0.0.18"
VRRP_TTL = 255
TYPE_ADVERTISEMENT = 1
AUTH_NONE, AUTH_PASS, AUTH_AH = 0, 1, 2
AUTH_LEN = 8  # v2: the authentication data after the addresses
MAX_ADVER_CS = 0xFFF  # v3: 12 bits of centiseconds

_HEAD = struct.Struct("!BBBBBBH")


class BadAdvert(ValueError):
    """Not a VRRP advertisement this side can read (the message says why, as a log line would)."""


@dataclass(frozen=True)
class Advert:
    version: int
    vrid: int
    priority: int
    addresses: tuple[str, ...]
    advert_int: float  # seconds (v2: whole seconds; v3: centisecond resolution)
    auth_type: int = AUTH_NONE
    auth_data: bytes = b""


def encode(advert: Advert, src: str, dst: str = VRRP_GROUP) -> bytes:
    """The VRRP message (what follows the IPv4 header) with its checksum."""
    addrs = b"".join(socket.inet_aton(a) for a in advert.addresses)
    if advert.version == 2:
        interval = max(1, min(255, round(advert.advert_int)))
        head = _HEAD.pack(0x21, advert.vrid, advert.priority, len(advert.addresses), advert.auth_type, interval, 0)
        body = head + addrs + advert.auth_data.ljust(AUTH_LEN, b"\0")[:AUTH_LEN]
        initial = 0
    elif advert.version == 3:
        centis = max(1, min(MAX_ADVER_CS, round(advert.advert_int * 100)))
        head = struct.pack("!BBBBHH", 0x31, advert.vrid, advert.priority, len(advert.addresses), centis, 0)
        body = head + addrs
        initial = pseudo_header_sum(socket.inet_aton(src), socket.inet_aton(dst), IPPROTO_VRRP, len(head + addrs))
    else:
        raise ValueError(f"VRRP version {advert.version}")
    check = checksum(body, initial)
    return body[:6] + struct.pack("!H", check) + body[8:]


def decode(data: bytes, src: str, dst: str) -> Advert:
    """The advertisement in a VRRP message from `src` to `dst`; BadAdvert when it is not valid."""
    if len(data) < 8:
        raise BadAdvert(f"ip payload too short ({len(data)} bytes)")
    version, kind = data[0] >> 4, data[0] & 0xF
    if version not in (2, 3):
        raise BadAdvert(f"invalid version {version}")
    if kind != TYPE_ADVERTISEMENT:
        raise BadAdvert(f"Invalid type {kind}")
    vrid, priority, count = data[1], data[2], data[3]
    size = 8 + 4 * count + (AUTH_LEN if version == 2 else 0)
    if len(data) < size:
        raise BadAdvert(f"ip payload too short: {len(data)} bytes for {count} addresses")
    data = data[:size] if version == 3 else data
    if version == 2:
        if checksum(data[:size]) != 0:
            raise BadAdvert("Invalid VRRPv2 checksum")
        auth_type, interval = data[4], float(data[5])
        auth_data = bytes(data[8 + 4 * count:size])
    else:
        initial = pseudo_header_sum(socket.inet_aton(src), socket.inet_aton(dst), IPPROTO_VRRP, size)
        if checksum(data, initial) != 0:
            raise BadAdvert("Invalid VRRPv3 checksum")
        auth_type, auth_data = AUTH_NONE, b""
        interval = (struct.unpack_from("!H", data, 4)[0] & MAX_ADVER_CS) / 100
    addrs = tuple(socket.inet_ntoa(bytes(data[8 + 4 * i:12 + 4 * i])) for i in range(count))
    return Advert(version, vrid, priority, addrs, interval, auth_type, auth_data)


def split_ipv4(datagram: bytes) -> tuple[str, str, int, bytes]:
    """(source, destination, TTL, payload) of an IPv4 datagram as a raw socket delivers it."""
    if len(datagram) < 20 or datagram[0] >> 4 != 4:
        raise BadAdvert("not an IPv4 packet")
    ihl = (datagram[0] & 0xF) * 4
    total = struct.unpack_from("!H", datagram, 2)[0]
    if ihl < 20 or total < ihl or len(datagram) < total:
        raise BadAdvert("truncated IPv4 packet")
    src, dst = socket.inet_ntoa(datagram[12:16]), socket.inet_ntoa(datagram[16:20])
    return src, dst, datagram[8], datagram[ihl:total]
