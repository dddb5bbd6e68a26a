"""IPv6 headers: offsets, the extension-header walk, and the ICMPv6 messages the director makes.

The IPv6 header starts at the same fixed frame offset as IPv4's (pylvs.packet.layout.IP). It has no
checksum; TCP, UDP and ICMPv6 checksums cover a pseudo-header of both addresses, the upper-layer
length and the next-header value (RFC 8200 §8.1), so an address rewrite is an L4 checksum delta.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from pylvs.packet import checksum
from pylvs.packet.layout import IP, Buffer

ETHERTYPE_IPV6 = 0x86DD
HDR_LEN = 40

# IPv6 header fields, relative to IP
V6_PLEN = 4
V6_NEXT = 6
V6_HLIM = 7
V6_SRC = 8
V6_DST = 24

# Next-header values
NH_HOPOPTS = 0
NH_TCP = 6
NH_UDP = 17
NH_IPV6 = 41
NH_ROUTING = 43
NH_FRAGMENT = 44
NH_ICMPV6 = 58
NH_NONE = 59
NH_DSTOPTS = 60
EXTENSIONS = frozenset({NH_HOPOPTS, NH_ROUTING, NH_DSTOPTS})  # walked as (next, length in 8 octets - 1)
MAX_EXTENSIONS = 8  # more than this is an attack, not a packet (the kernel also bounds its walk)

# ICMPv6 types
DEST_UNREACH = 1
PACKET_TOO_BIG = 2
TIME_EXCEEDED = 3
PARAM_PROBLEM = 4
ECHO_REQUEST = 128
ECHO_REPLY = 129
NEIGHBOUR_SOLICIT = 135
NEIGHBOUR_ADVERT = 136
CODE_NO_ROUTE = 0
CODE_ADDR_UNREACH = 3
CODE_PORT_UNREACH = 4
CODE_HOP_LIMIT = 0
ERROR_TYPES = frozenset({DEST_UNREACH, PACKET_TOO_BIG, TIME_EXCEEDED, PARAM_PROBLEM})
MIN_MTU = 1280  # IPv6's minimum link MTU: an ICMPv6 error never makes a packet longer (RFC 4443 §2.4)
DEFAULT_HOP_LIMIT = 64
ND_HOP_LIMIT = 255  # neighbour discovery messages are sent and accepted with 255 only (RFC 4861 §7.1)

# Neighbour advertisement flags (first byte of the reserved word)
NA_SOLICITED = 0x40
NA_OVERRIDE = 0x20
OPT_SOURCE_LL = 1
OPT_TARGET_LL = 2

ALL_NODES = bytes.fromhex("ff020000000000000000000000000001")
_ETH_V6 = ETHERTYPE_IPV6.to_bytes(2, "big")
_HDR = struct.Struct("!IHBB16s16s")


@dataclass(frozen=True)
class Parsed:
    """What the extension-header walk found: the upper-layer protocol and where its header starts
    (relative to the frame), and whether the packet is a fragment (`first`: the one with offset 0)."""

    proto: int
    l4: int
    fragment: bool = False
    first: bool = True


def walk(buf: Buffer, end: int, start: int = IP) -> Parsed | None:
    """Walk the extension headers of the IPv6 packet at `start` in `buf`, ending at `end` (offsets in
    `buf`; an ICMPv6 error's quote is walked the same way).

    Hop-by-hop, routing and destination options are skipped by their length; a fragment header
    says whether this is the first fragment (the one carrying the L4 header). None when a header
    runs past the packet or the chain is too long."""
    nh = buf[start + V6_NEXT]
    off = start + HDR_LEN
    fragment, first = False, True
    for _ in range(MAX_EXTENSIONS):
        if nh in EXTENSIONS:
            if off + 8 > end:
                return None
            nh, off = buf[off], off + (buf[off + 1] + 1) * 8
        elif nh == NH_FRAGMENT:
            if off + 8 > end:
                return None
            fragment = True
            first = not ((buf[off + 2] << 8 | buf[off + 3]) & 0xFFF8)
            nh, off = buf[off], off + 8
        else:
            return Parsed(nh, off, fragment, first) if off <= end else None
    return None


def pseudo_sum(src: bytes, dst: bytes, proto: int, length: int) -> int:
    """The one's-complement sum of the IPv6 pseudo-header (not folded to 16 bits' complement)."""
    return checksum.ones_sum(src + dst + length.to_bytes(4, "big") + bytes(3) + bytes((proto,)))


def l4_checksum(packet: bytes | bytearray | memoryview, l4: int, proto: int) -> int:
    """The checksum of an upper-layer message at `l4` (offset in `packet`, an IPv6 packet) whose own
    checksum field is zero."""
    src, dst = bytes(packet[V6_SRC:V6_SRC + 16]), bytes(packet[V6_DST:V6_DST + 16])
    return checksum.checksum(packet[l4:], pseudo_sum(src, dst, proto, len(packet) - l4))


def header(src: bytes, dst: bytes, next_header: int, payload_len: int, hop_limit: int = DEFAULT_HOP_LIMIT,
           traffic_class: int = 0) -> bytes:
    return _HDR.pack(6 << 28 | traffic_class << 20, payload_len, next_header, hop_limit, src, dst)


def icmp6(src: bytes, dst: bytes, body: bytes, hop_limit: int = DEFAULT_HOP_LIMIT) -> bytes:
    """An IPv6 packet carrying the ICMPv6 message `body` (type, code, zero checksum, rest), checksum set."""
    packet = bytearray(header(src, dst, NH_ICMPV6, len(body), hop_limit) + body)
    packet[HDR_LEN + 2:HDR_LEN + 4] = l4_checksum(packet, HDR_LEN, NH_ICMPV6).to_bytes(2, "big")
    return bytes(packet)


def error(src: bytes, about: bytes | memoryview, icmp_type: int, code: int, info: int = 0) -> bytes:
    """An ICMPv6 error from `src` to the sender of `about` (an IPv6 packet), quoting as much of it as
    fits in the minimum MTU (icmp6_send)."""
    room = MIN_MTU - HDR_LEN - 8
    quote = bytes(about[:room])
    return icmp6(src, bytes(about[V6_SRC:V6_SRC + 16]),
                 struct.pack("!BBHI", icmp_type, code, 0, info) + quote)


def is_error_about_error(packet: bytes | memoryview, parsed: Parsed | None) -> bool:
    """Whether `packet` is itself an ICMPv6 error (never answered with another one, RFC 4443 §2.4)."""
    return parsed is not None and parsed.proto == NH_ICMPV6 and packet[parsed.l4 - IP] < 128


def echo_reply(packet: bytes | memoryview, l4: int) -> bytes:
    """The reply to an echo request (`l4`: its ICMPv6 header's offset in `packet`), from its destination."""
    body = bytearray(packet[l4:])
    body[0], body[2], body[3] = ECHO_REPLY, 0, 0
    return icmp6(bytes(packet[V6_DST:V6_DST + 16]), bytes(packet[V6_SRC:V6_SRC + 16]), bytes(body))


def solicited_target(packet: bytes | memoryview, l4: int) -> bytes | None:
    """The target address of a neighbour solicitation (hop limit 255, code 0), else None."""
    if len(packet) - l4 < 24 or packet[V6_HLIM] != ND_HOP_LIMIT or packet[l4 + 1] != 0:
        return None
    return bytes(packet[l4 + 8:l4 + 24])


def advertisement(mac: bytes, target: bytes, dst_mac: bytes, dst: bytes, solicited: bool) -> bytes:
    """An Ethernet frame with a neighbour advertisement for `target` at `mac` (override set; solicited
    when answering a solicitation, else an unsolicited one to all nodes)."""
    flags = NA_OVERRIDE | (NA_SOLICITED if solicited else 0)
    body = struct.pack("!BBHB3x16sBB6s", NEIGHBOUR_ADVERT, 0, 0, flags, target, OPT_TARGET_LL, 1, mac)
    return dst_mac + mac + _ETH_V6 + icmp6(target, dst, body, ND_HOP_LIMIT)


def multicast_mac(addr: bytes) -> bytes:
    """The Ethernet address of an IPv6 multicast group (33:33 + its last 32 bits)."""
    return b"\x33\x33" + addr[12:]


def unsolicited_advertisement(mac: bytes, target: bytes) -> bytes:
    """What the director sends when it takes `target` (the IPv6 counterpart of gratuitous ARP)."""
    return advertisement(mac, target, multicast_mac(ALL_NODES), ALL_NODES, solicited=False)


def tcp_segments(packet: bytes | bytearray | memoryview, mss: int) -> list[bytes] | None:
    """Cut a TCP/IPv6 super-frame (a GSO_TCPV6 packet, no extension headers; its checksum partial or not)
    into packets of at most `mss` payload bytes, as tcp_gso_segment: the sequence number advances by
    the payload, FIN and PSH stay on the last segment only, CWR on the first only; checksums complete.
    None if the packet is not one to cut so."""
    if len(packet) < HDR_LEN + 20 or packet[V6_NEXT] != NH_TCP or mss <= 0:
        return None
    thl = (packet[HDR_LEN + 12] >> 4) << 2
    hl = HDR_LEN + thl
    if thl < 20 or len(packet) < hl:
        return None
    ip6 = bytes(packet[:HDR_LEN])
    tcp = bytearray(packet[HDR_LEN:hl])
    payload = bytes(packet[hl:])
    seq = int.from_bytes(tcp[4:8], "big")
    flags = tcp[13]
    src, dst = ip6[V6_SRC:V6_SRC + 16], ip6[V6_DST:V6_DST + 16]
    out = []
    starts = range(0, max(len(payload), 1), mss)
    for n, off in enumerate(starts):
        piece = payload[off:off + mss]
        last = n == len(starts) - 1
        tcp[4:8] = ((seq + off) & 0xFFFFFFFF).to_bytes(4, "big")
        tcp[13] = flags & ~((0x01 | 0x08) if not last else 0) & ~(0x80 if n else 0)  # FIN, PSH / CWR
        tcp[16] = tcp[17] = 0
        length = thl + len(piece)
        c = checksum.checksum(bytes(tcp) + piece, pseudo_sum(src, dst, NH_TCP, length))
        tcp[16:18] = c.to_bytes(2, "big")
        out.append(ip6[:V6_PLEN] + length.to_bytes(2, "big") + ip6[V6_PLEN + 2:] + bytes(tcp) + piece)
    return out
