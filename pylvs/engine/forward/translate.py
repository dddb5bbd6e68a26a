"""IPv4 <-> IPv6 header translation as RFC 7915 says it, for NAT64 (forward/nat64.py) and NAT46
(forward/nat46.py), and the ICMP error a FULLNAT director passes on to the other side of a connection.

Packets (§4.1, §5.1): TOS <-> traffic class, TTL <-> hop limit (the caller's - 1 included), IPv6
extension headers and IPv4 options dropped, IPv4 DF set when the translated packet is longer than
1260 bytes (a shorter one may still be fragmented by an IPv4 router), an IPv6 packet too long for
the egress link cut into fragments with a Fragment Header when its IPv4 sender allowed fragmentation.
Addresses change size, so the L4 checksum is computed for the new pseudo-header (a CHECKSUM_PARTIAL
one gets the pseudo-header sum; the virtio_net_hdr's offsets and GSO type follow the header).

ICMP errors (`error`): the message is rebuilt for the other side, with its outer addresses and the
quoted packet's addresses and ports as that side knows them; the quoted L4 checksum is patched by the
difference (it may be cut off, so it is never summed afresh), the quoted IPv4 header checksum and the
ICMP(v6) checksum are computed afresh. Across families the type and code follow §4.2 and §5.2
(Fragmentation Needed <-> Packet Too Big with the MTU moved by the 20 bytes between the headers,
Parameter Problem pointers mapped field by field) and the quoted header is translated too.
"""

from __future__ import annotations

import struct
from collections.abc import Callable

from pylvs.engine.egress import Buffer
from pylvs.packet import checksum, icmp
from pylvs.packet import ipv6 as v6
from pylvs.packet.layout import ETH_TYPE, IP, PROTO_ICMP, PROTO_TCP, PROTO_UDP, TCP_CSUM, UDP_CSUM
from pylvs.packet.offload import ip_checksum
from pylvs.packet.vnet import EMPTY as EMPTY_VNET
from pylvs.packet.vnet import F_NEEDS_CSUM, GSO_ECN, GSO_TCPV4, GSO_TCPV6

IPV4_HDR = 20
HDR_GROWTH = v6.HDR_LEN - IPV4_HDR  # what an IPv6 header adds over an IPv4 one
DF_ABOVE = 1260  # §5.1: DF set on translated packets longer than this
NH_FRAGMENT_LEN = 8
_GSO_TO_V4 = {GSO_TCPV6: GSO_TCPV4}
_GSO_TO_V6 = {GSO_TCPV4: GSO_TCPV6}
_ETH_V4 = b"\x08\x00"
_ETH_V6 = v6.ETHERTYPE_IPV6.to_bytes(2, "big")

# Parameter Problem pointers, field by field (§4.2, §5.2): IPv4 header offset -> IPv6 and back.
_PTR_4TO6 = {0: 0, 1: 1, 2: 4, 3: 4, 8: 7, 9: 6, **{i: 8 for i in range(12, 16)}, **{i: 24 for i in range(16, 20)}}
_PTR_6TO4 = {0: 0, 1: 1, 4: 2, 5: 2, 6: 9, 7: 8, **{i: 12 for i in range(8, 24)}, **{i: 16 for i in range(24, 40)}}
# ICMPv4 Destination Unreachable codes -> ICMPv6 Destination Unreachable codes (§4.2; 2 and 4 apart).
_UNREACH_4TO6 = {0: 0, 1: 0, 3: 4, 5: 0, 6: 0, 7: 0, 8: 0, 9: 1, 10: 1, 11: 0, 12: 0, 13: 1, 15: 1}
_UNREACH_6TO4 = {0: 1, 1: 10, 2: 1, 3: 1, 4: 3}
ICMPV6_PARAM_NEXT_HEADER = 1  # Parameter Problem: unrecognized next header
ICMP_PROTO_UNREACH = 2
ICMP_PARAM_PROBLEM = 12


# -- packets --------------------------------------------------------------------------------

def _l4_checksum(out: bytearray, l4: int, proto: int, src: bytes, dst: bytes) -> None:
    """Set the TCP/UDP checksum of the packet in `out` (L4 at `l4` to the end) for its new pseudo-header:
    complete, or for a CHECKSUM_PARTIAL frame the pseudo-header sum only (the kernel or NIC adds the rest)."""
    field = l4 + (TCP_CSUM if proto == PROTO_TCP else UDP_CSUM)
    length = len(out) - l4
    pseudo = checksum.fold(checksum.ones_sum(src + dst) + proto + length)
    if out[0] & F_NEEDS_CSUM:
        out[field:field + 2] = pseudo.to_bytes(2, "big")
        return
    out[field] = out[field + 1] = 0
    c = checksum.checksum(out[l4:], pseudo)
    if not c and proto != PROTO_TCP:
        c = 0xFFFF  # UDP: zero would mean "no checksum"
    out[field:field + 2] = c.to_bytes(2, "big")


def _move_offloads(out: bytearray, shift: int, gso_map: dict[int, int]) -> None:
    """The virtio_net_hdr of a frame whose L4 header moved by `shift` bytes (its GSO type to the new family)."""
    if out[1]:
        out[1] = gso_map.get(out[1] & ~GSO_ECN, out[1] & ~GSO_ECN) | (out[1] & GSO_ECN)
        hdr_len = (out[2] | out[3] << 8) + shift
        out[2], out[3] = hdr_len & 0xFF, hdr_len >> 8
    if out[0] & F_NEEDS_CSUM:
        start = (out[6] | out[7] << 8) + shift
        out[6], out[7] = start & 0xFF, start >> 8


def ipv4_header(src: bytes, dst: bytes, proto: int, payload_len: int, ttl: int, tos: int) -> bytes:
    """The IPv4 header of a translated packet: DF as §5.1 (set above 1260 bytes)."""
    return icmp.ipv4_header(src, dst, proto, payload_len, ttl=ttl, tos=tos, df=payload_len + IPV4_HDR > DF_ABOVE)


def to_ipv4(buf: Buffer, l4: int, end: int, src: bytes, dst: bytes, ports: bytes) -> bytearray:
    """The IPv6 packet in frame `buf` (upper-layer header at `l4`) as an IPv4 frame from `src` to `dst`."""
    proto = v6.walk(buf, end).proto
    tclass = (buf[IP] & 0x0F) << 4 | buf[IP + 1] >> 4
    header = ipv4_header(src, dst, proto, end - l4, buf[IP + v6.V6_HLIM] - 1, tclass)
    out = bytearray(buf[:IP]) + header + buf[l4:end]
    out[ETH_TYPE:ETH_TYPE + 2] = _ETH_V4
    new_l4 = IP + IPV4_HDR
    out[new_l4:new_l4 + 4] = ports
    _move_offloads(out, new_l4 - l4, _GSO_TO_V4)
    _l4_checksum(out, new_l4, proto, src, dst)
    return out


def to_ipv6(buf: Buffer, l4: int, end: int, src: bytes, dst: bytes, ports: bytes) -> bytearray:
    """The IPv4 packet in frame `buf` (L4 header at `l4`) as an IPv6 frame from `src` to `dst`."""
    proto = buf[IP + 9]
    header = v6.header(src, dst, proto, end - l4, hop_limit=buf[IP + 8] - 1, traffic_class=buf[IP + 1])
    out = bytearray(buf[:IP]) + header + buf[l4:end]
    out[ETH_TYPE:ETH_TYPE + 2] = _ETH_V6
    new_l4 = IP + v6.HDR_LEN
    out[new_l4:new_l4 + 4] = ports
    _move_offloads(out, new_l4 - l4, _GSO_TO_V6)
    _l4_checksum(out, new_l4, proto, src, dst)
    return out


def ipv6_fragments(frame: bytearray, ident: int, mtu: int) -> list[bytearray]:
    """A translated IPv6 frame (no extension headers, complete checksum) cut into fragments that fit
    `mtu`, each with a Fragment Header carrying the IPv4 packet's identification (§4.1)."""
    lead, header, payload = frame[:IP], frame[IP:IP + v6.HDR_LEN], frame[IP + v6.HDR_LEN:]
    step = (mtu - v6.HDR_LEN - NH_FRAGMENT_LEN) & ~7
    out = []
    for off in range(0, len(payload), step):
        chunk = payload[off:off + step]
        more = off + step < len(payload)
        h = bytearray(header)
        h[v6.V6_PLEN:v6.V6_PLEN + 2] = (NH_FRAGMENT_LEN + len(chunk)).to_bytes(2, "big")
        h[v6.V6_NEXT] = v6.NH_FRAGMENT
        fh = struct.pack("!BBHI", header[v6.V6_NEXT], 0, off | more, ident)
        out.append(bytearray(lead + h + fh + chunk))
    return out


# -- ICMP errors ----------------------------------------------------------------------------

def _v4_to_v6(itype: int, code: int, rest: bytes) -> tuple[int, int, int] | None:
    """An ICMPv4 error's type, code and rest-of-header word as ICMPv6 (§4.2), or None: not translated."""
    if itype == icmp.DEST_UNREACH:
        if code == icmp.CODE_FRAG_NEEDED:
            return v6.PACKET_TOO_BIG, 0, (rest[2] << 8 | rest[3]) + HDR_GROWTH
        if code == ICMP_PROTO_UNREACH:
            return v6.PARAM_PROBLEM, ICMPV6_PARAM_NEXT_HEADER, 6  # the pointer names the next header field
        if code in _UNREACH_4TO6:
            return v6.DEST_UNREACH, _UNREACH_4TO6[code], 0
        return None
    if itype == icmp.TIME_EXCEEDED:
        return v6.TIME_EXCEEDED, code, 0
    if itype == ICMP_PARAM_PROBLEM and code in (0, 2) and rest[0] in _PTR_4TO6:
        return v6.PARAM_PROBLEM, 0, _PTR_4TO6[rest[0]]
    return None  # source quench, redirect and the rest have no ICMPv6 counterpart


def _v6_to_v4(itype: int, code: int, rest: bytes) -> tuple[int, int, int] | None:
    """An ICMPv6 error's type, code and rest-of-header word as ICMPv4 (§5.2), or None: not translated."""
    word = int.from_bytes(rest, "big")
    if itype == v6.DEST_UNREACH:
        return (icmp.DEST_UNREACH, _UNREACH_6TO4[code], 0) if code in _UNREACH_6TO4 else None
    if itype == v6.PACKET_TOO_BIG:
        return icmp.DEST_UNREACH, icmp.CODE_FRAG_NEEDED, min(max(word - HDR_GROWTH, 0), 0xFFFF)
    if itype == v6.TIME_EXCEEDED:
        return icmp.TIME_EXCEEDED, code, 0
    if itype == v6.PARAM_PROBLEM:
        if code == 0 and word in _PTR_6TO4:
            return ICMP_PARAM_PROBLEM, 0, _PTR_6TO4[word] << 24
        if code == ICMPV6_PARAM_NEXT_HEADER:
            return icmp.DEST_UNREACH, ICMP_PROTO_UNREACH, 0
    return None


def _quote_facts(buf: Buffer, emb: int, el4: int, end: int) -> tuple[int, int, int, int, bytes]:
    """The quoted packet's protocol, upper-layer length (as its header says: the quote may be cut), TTL or
    hop limit, TOS or traffic class, and its address bytes. The quote is of the error's own family (the
    packet paths checked its headers that far)."""
    if buf[IP] >> 4 == 6:
        plen = buf[emb + v6.V6_PLEN] << 8 | buf[emb + v6.V6_PLEN + 1]
        walked = v6.walk(buf, end, emb)
        tclass = (buf[emb] & 0x0F) << 4 | buf[emb + 1] >> 4
        return (walked.proto if walked is not None else buf[emb + v6.V6_NEXT],
                max(0, plen - (el4 - emb - v6.HDR_LEN)), buf[emb + v6.V6_HLIM], tclass,
                bytes(buf[emb + v6.V6_SRC:emb + v6.V6_DST + 16]))
    totlen = buf[emb + 2] << 8 | buf[emb + 3]
    return buf[emb + 9], max(0, totlen - (el4 - emb)), buf[emb + 8], buf[emb + 1], bytes(buf[emb + 12:emb + 20])


def _quote_header(buf: Buffer, emb: int, el4: int, end: int, src: bytes, dst: bytes) -> bytes:
    """The quoted packet's IP header for the other side: the same family keeps its header (options and
    extension headers included) with new addresses; the other family gets a translated one."""
    proto, length, ttl, tos, _ = _quote_facts(buf, emb, el4, end)
    same = (buf[IP] >> 4 == 6) == (len(src) == 16)
    if same and len(src) == 16:
        h = bytearray(buf[emb:el4])
        h[v6.V6_SRC:v6.V6_DST + 16] = src + dst
        return bytes(h)
    if same:
        h = bytearray(buf[emb:el4])
        h[12:20] = src + dst
        ip_checksum(h)
        return bytes(h)
    if len(src) == 16:
        return v6.header(src, dst, proto, length, hop_limit=ttl, traffic_class=tos)
    return ipv4_header(src, dst, proto, length, ttl, tos)


def _quote_l4(buf: Buffer, el4: int, end: int, proto: int, old_addrs: bytes, new_addrs: bytes, ports: bytes,
              seq_map: tuple[int, Callable[[int], int]] | None) -> bytes:
    """The quoted TCP/UDP header (and what follows of it) with the other side's ports (and, for TCP, the
    sequence or acknowledgement number `seq_map` maps: (offset, function)), its checksum patched."""
    q = bytearray(buf[el4:end])
    span = min(len(q), 12 if proto == PROTO_TCP else 4) & ~1  # the words that change (never the UDP checksum)
    old = bytes(q[:span])
    q[0:4] = ports
    if seq_map is not None and proto == PROTO_TCP and len(q) >= seq_map[0] + 4:
        at, fn = seq_map
        q[at:at + 4] = fn(int.from_bytes(q[at:at + 4], "big")).to_bytes(4, "big")
    field = TCP_CSUM if proto == PROTO_TCP else UDP_CSUM
    if proto in (PROTO_TCP, PROTO_UDP) and len(q) >= field + 2:
        c = q[field] << 8 | q[field + 1]
        if c or proto == PROTO_TCP:  # a zero UDP checksum stays "none"
            d = checksum.delta(old_addrs + old, new_addrs + bytes(q[:span]))
            q[field:field + 2] = (checksum.apply(c, d) or (0 if proto == PROTO_TCP else 0xFFFF)).to_bytes(2, "big")
    return bytes(q)


def error(buf: Buffer, l4: int, end: int, emb: int, el4: int, src: bytes, dst: bytes, qsrc: bytes, qdst: bytes,
          qports: bytes, seq_map: tuple[int, Callable[[int], int]] | None = None) -> bytearray | None:
    """The ICMP(v6) error in frame `buf` (its ICMP header at `l4`, the quote's IP header at `emb` and L4
    header at `el4`) rebuilt as a frame from `src` to `dst` (their size is the family) quoting a packet
    from `qsrc` to `qdst` with ports `qports`; None when its type has no counterpart in that family.
    The caller has checked that the TTL or hop limit allows one more hop."""
    from6, to6 = buf[IP] >> 4 == 6, len(src) == 16
    itype, code, rest = buf[l4], buf[l4 + 1], bytes(buf[l4 + 4:l4 + 8])
    if from6 != to6:
        mapped = _v6_to_v4(itype, code, rest) if from6 else _v4_to_v6(itype, code, rest)
        if mapped is None:
            return None
        itype, code, word = mapped
        rest = word.to_bytes(4, "big")
    proto, _, _, _, old_addrs = _quote_facts(buf, emb, el4, end)
    quote = (_quote_header(buf, emb, el4, end, qsrc, qdst)
             + _quote_l4(buf, el4, end, proto, old_addrs, qsrc + qdst, qports, seq_map))
    body = bytearray(bytes((itype, code, 0, 0)) + rest + quote)
    if from6:
        ttl, tos = buf[IP + v6.V6_HLIM] - 1, (buf[IP] & 0x0F) << 4 | buf[IP + 1] >> 4
    else:
        ttl, tos = buf[IP + 8] - 1, buf[IP + 1]
    if to6:
        body = body[:v6.MIN_MTU - v6.HDR_LEN]
        body[2:4] = checksum.checksum(body, v6.pseudo_sum(src, dst, v6.NH_ICMPV6, len(body))).to_bytes(2, "big")
        outer = v6.header(src, dst, v6.NH_ICMPV6, len(body), hop_limit=ttl, traffic_class=tos)
        return bytearray(EMPTY_VNET + bytes(12) + _ETH_V6 + outer + body)
    body = body[:icmp.MAX_ERROR_LEN - IPV4_HDR]
    body[2:4] = checksum.checksum(body).to_bytes(2, "big")
    outer = bytearray(icmp.ipv4_header(src, dst, PROTO_ICMP, len(body), ttl=ttl, tos=tos))
    if not from6:
        outer[6] = buf[IP + 6] & 0x40  # the DF bit as it came (IPv4 to IPv4)
        ip_checksum(outer)
    return bytearray(EMPTY_VNET + bytes(12) + _ETH_V4 + outer + body)
