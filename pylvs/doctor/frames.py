"""The doctor's packets: ARP, TCP SYN and RST, the tunnel around them; and what comes back.

Built with struct and pylvs.packet; every probe carries its number twice, as the TCP source port
and as the IP ID (outer and inner), so a SYN-ACK or RST (by port) and an ICMP error (by the quoted
ID, which a quote of eight bytes past the header still has) find their probe.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from pylvs.engine.forward.clientaddr import tcp_options
from pylvs.engine.forward.tun import GRE_HEADER, GUE_HEADER
from pylvs.packet import arp, checksum
from pylvs.packet.layout import (
    ETHERTYPE_ARP,
    ETHERTYPE_IPV4,
    IP_DF,
    PROTO_GRE,
    PROTO_ICMP,
    PROTO_IPIP,
    PROTO_TCP,
    PROTO_UDP,
    TCP_ACK,
    TCP_RST,
    TCP_SYN,
)

_ETH = struct.Struct("!6s6sH")
_IP = struct.Struct("!BBHHHBBH4s4s")
_TCP = struct.Struct("!HHIIBBHHH")
_UDP = struct.Struct("!HHHH")
MSS_OPTION = struct.pack("!BBH", 2, 4, 1460)
ENCAP = {"ipip": PROTO_IPIP, "gue": PROTO_UDP, "gre": PROTO_GRE}
TUNNEL_PROTOS = frozenset(ENCAP.values())


def ethernet(dst: bytes, src: bytes, payload: bytes, ethertype: int = ETHERTYPE_IPV4) -> bytes:
    return _ETH.pack(dst, src, ethertype) + payload


def ipv4(src: bytes, dst: bytes, proto: int, payload: bytes, ident: int, ttl: int = 64) -> bytes:
    """An IPv4 packet with DF (probes are never fragmented: a too-big one must come back as an error)."""
    hdr = bytearray(_IP.pack(0x45, 0, 20 + len(payload), ident, IP_DF, ttl, proto, 0, src, dst))
    struct.pack_into("!H", hdr, 10, checksum.checksum(hdr))
    return bytes(hdr) + payload


def tcp(src: bytes, dst: bytes, sport: int, dport: int, seq: int, ack: int, flags: int,
        options: bytes = b"", payload: bytes = b"") -> bytes:
    seg = bytearray(_TCP.pack(sport, dport, seq, ack, (5 + len(options) // 4) << 4, flags, 64240, 0, 0))
    seg += options + payload
    struct.pack_into("!H", seg, 16, checksum.checksum(seg, checksum.pseudo_header_sum(src, dst, PROTO_TCP, len(seg))))
    return bytes(seg)


def syn(src: bytes, dst: bytes, sport: int, dport: int, ident: int, ttl: int = 64, size: int = 0) -> bytes:
    """A SYN as an IPv4 packet (an MSS option, then zeros up to `size` bytes: a SYN may carry data,
    which the server drops while it answers)."""
    pad = max(size - 20 - 20 - len(MSS_OPTION), 0)
    return ipv4(src, dst, PROTO_TCP, tcp(src, dst, sport, dport, ident << 16, 0, TCP_SYN, MSS_OPTION,
                                          bytes(pad)), ident, ttl)


def rst(src: bytes, dst: bytes, sport: int, dport: int, seq: int, ident: int) -> bytes:
    return ipv4(src, dst, PROTO_TCP, tcp(src, dst, sport, dport, seq, 0, TCP_RST), ident)


def encapsulate(kind: str, src: bytes, dst: bytes, inner: bytes, ident: int, port: int = 0) -> bytes:
    """`inner` in an outer IPv4 packet src -> dst as lvsd sends it (no tunnel checksum)."""
    if kind == "gue":
        body = GUE_HEADER + inner
        # The UDP checksum may be zero for IPv4 (RFC 768); the outer source port spreads flows.
        return ipv4(src, dst, PROTO_UDP, _UDP.pack(ident | 0x8000, port, 8 + len(body), 0) + body, ident)
    return ipv4(src, dst, ENCAP[kind], (GRE_HEADER if kind == "gre" else b"") + inner, ident)


@dataclass(frozen=True)
class Answer:
    """A TCP segment to one of our ports, or an ICMP error quoting one of our packets."""

    kind: str            # "synack", "rst", "icmp"
    key: int             # the probe's number: our TCP port, or the quoted IP ID
    src: bytes
    sport: int = 0
    ack: int = 0
    mss: int = 0
    icmp_type: int = -1
    icmp_code: int = -1
    icmp_mtu: int = 0
    about_outer: bool = False
    quoted_dst: bytes = b""  # an ICMP error's: where the quoted packet was going


def _mss(segment: bytes) -> int:
    """The MSS option of a TCP segment, 0 when it has none."""
    if len(segment) < (segment[12] >> 4) * 4:
        return 0
    for at, kind, length in tcp_options(segment, 0):
        if kind == 2 and length == 4:
            return struct.unpack_from("!H", segment, at + 2)[0]
    return 0


def parse_ipv4(frame: bytes, to: bytes) -> Answer | None:
    """What an Ethernet frame is to the probes addressed from `to`: an Answer, or None (not ours)."""
    if len(frame) < 34 or _ETH.unpack_from(frame)[2] != ETHERTYPE_IPV4:
        return None
    ip = frame[14:]
    vihl, _, total, _, frag, _, proto, _, src, dst = _IP.unpack_from(ip)
    ihl = (vihl & 0x0F) << 2
    if vihl >> 4 != 4 or ihl < 20 or dst != to or frag & 0x1FFF:
        return None
    ip = ip[:min(total, len(ip))]
    body = ip[ihl:]
    if proto == PROTO_TCP and len(body) >= 20:
        sport, dport, _, ack, off, flags = _TCP.unpack_from(body)[:6]
        if flags & TCP_SYN and flags & TCP_ACK:
            return Answer("synack", dport, src, sport, ack, _mss(body))
        if flags & TCP_RST:
            return Answer("rst", dport, src, sport, ack)
        return None
    if proto != PROTO_ICMP or len(body) < 8 + 20:
        return None
    itype, code, _, _, mtu = struct.unpack_from("!BBHHH", body)
    if itype not in (3, 4, 11, 12):
        return None
    quoted = body[8:]
    qproto, qsrc = quoted[9], quoted[12:16]
    if qsrc != to:
        return None
    qid = struct.unpack_from("!H", quoted, 4)[0]
    return Answer("icmp", qid, src, icmp_type=itype, icmp_code=code, icmp_mtu=mtu,
                  about_outer=qproto in TUNNEL_PROTOS, quoted_dst=quoted[16:20])


def parse_arp(frame: bytes) -> tuple[int, bytes, bytes, bytes] | None:
    """(op, sender MAC, sender IP, target IP) of an ARP frame, else None."""
    if len(frame) < 14 or _ETH.unpack_from(frame)[2] != ETHERTYPE_ARP:
        return None
    parsed = arp.parse(frame[14:])
    return None if parsed is None else (parsed[0], parsed[1], parsed[2], parsed[4])
