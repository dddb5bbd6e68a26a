"""IP tunneling (`-i`): the request inside a new IPv4 header DIP -> RIP (ipvs.md §4.4).

The inner packet keeps everything but its TTL (decremented, header checksum refreshed, as
ip_vs_tunnel_xmit does before encapsulating). The outer header copies TTL, DF and the DS field
(ECN as INET_ECN_encapsulate) and carries protocol 4 (ipip), 17 (UDP + GUE) or 47 (GRE).

Frames grow here, so each one is rebuilt as a new bytearray. Offloads end at the director: a GSO
super-frame is cut into MTU-sized segments and partial checksums are completed (segment.py),
because AF_PACKET cannot send tunnel GSO and no device would finish an inner checksum.
"""

from __future__ import annotations

import secrets
import struct
import zlib
from typing import TYPE_CHECKING

from pylvs.engine.egress import NOTHING, Buffer, Output
from pylvs.engine.flow import DIR_IN, ENCAP_BY_TUN_TYPE, ENCAP_GRE, ENCAP_GUE, F_ENCAP_CSUM, FlowEntry
from pylvs.engine.forward.base import Forwarder
from pylvs.engine.forward.rewrite import TTL_ONLY, decrement_ttl
from pylvs.engine.hops import Hop
from pylvs.ipvs_uapi import PROTO_SCTP, Method
from pylvs.packet import icmp
from pylvs.packet.layout import (
    ETHERTYPE_IPV4,
    IP,
    IP_CSUM,
    IP_SRC,
    PROTO_GRE,
    PROTO_ICMP,
    PROTO_IPIP,
    PROTO_TCP,
    PROTO_UDP,
)
from pylvs.packet.offload import complete_partial, csum_of, fragments, tcp_segments, udp_segments, words
from pylvs.packet.vnet import EMPTY as EMPTY_VNET
from pylvs.packet.vnet import F_NEEDS_CSUM, GSO_ECN, GSO_NONE, GSO_TCPV4, GSO_UDP_L4, VNET_HDR_LEN

if TYPE_CHECKING:
    from pylvs.engine.conntrack import Conn, ConnTable

GUE_HEADER = b"\x00\x04\x00\x00"  # version 0, hlen 0, proto_ctype 4 (IPIP), flags 0
GRE_HEADER = b"\x00\x00\x08\x00"  # no C/K/S bits, version 0, protocol 0x0800
GRE_CSUM_HEADER = b"\x80\x00\x08\x00"  # C bit: a checksum and a reserved word follow
GRE_CSUM_SUM = 0x8000 + 0x0800  # the words of that header, checksum field zero
LOCAL_PORT_RANGE = (32768, 60999)  # ip_local_port_range: where udp_flow_src_port picks from
MIN_MTU = 68
_ETH_TAIL = ETHERTYPE_IPV4.to_bytes(2, "big")
_NO_MACS = bytes(12)
_OUTER = struct.Struct("!BBHHHBB2s4s4s")
_UDP = struct.Struct("!HHHH")
_H = struct.Struct("!H")
_ZERO2 = b"\0\0"
# The outer header's fields: TOS, TTL, DF, the link's MTU, and the UDP source port (GUE).
Outer = tuple[int, int, int, int, int]


def encap_layout(f: FlowEntry) -> tuple[int, int]:
    """(outer protocol, bytes between the outer IPv4 header and the inner packet) of a tunnel recipe."""
    if f.encap == ENCAP_GUE:
        return PROTO_UDP, 8 + len(GUE_HEADER)
    if f.encap == ENCAP_GRE:
        return PROTO_GRE, 8 if f.flags & F_ENCAP_CSUM else 4
    return PROTO_IPIP, 0


def flow_port(key: bytes, seed: int) -> int:
    """A UDP source port from a flow hash, scaled into the local port range (udp_flow_src_port)."""
    h = zlib.crc32(key, seed)
    h = (h ^ (h << 16)) & 0xFFFFFFFF  # only the upper 16 bits feed the scaling
    lo, hi = LOCAL_PORT_RANGE
    return ((h * (hi - lo)) >> 32) + lo


def ecn_encapsulate(tos: int) -> int:
    """INET_ECN_encapsulate(inner, inner): DSCP and ECT copied; CE becomes ECT(0) outside."""
    return ((tos & ~3) | 2) if (tos & 3) == 3 else tos


class Tunnel(Forwarder):
    """Encapsulates requests towards the real server, which answers the client itself."""

    method = Method.TUNNEL
    sees_replies = False

    def __init__(self, egress) -> None:
        super().__init__(egress)
        self._seed = secrets.randbits(32)
        self._ident = secrets.randbits(16)

    def bind(self, conn: Conn, conns: ConnTable) -> str | None:
        dest = conn.dest
        if dest.tun_type == "gue" and not dest.tun_port:
            return "tunnel_no_port"  # ipvsadm insists on --tun-port for gue
        f = FlowEntry(conn.proto, conn.in_key, Method.TUNNEL, DIR_IN, conn.caddr + conn.vaddr,
                      conn.cport + conn.vport, TTL_ONLY)
        f.encap = ENCAP_BY_TUN_TYPE[dest.tun_type]
        # --tun-remcsum asks for the UDP checksum too; its GUE option only applies to partial
        # checksums, which never leave the director (completed before encapsulation).
        if dest.tun_flags in ("csum", "remcsum") and dest.tun_type != "ipip":
            f.flags |= F_ENCAP_CSUM
        f.outer_dst = dest.addr
        f.encap_dport = dest.tun_port
        f.encap_sport = flow_port(conn.in_key + bytes((conn.proto,)), self._seed)
        conn.in_flow = f
        return None

    def inbound(self, conn: Conn, buf: Buffer, l4: int, partial: bool, now: float) -> Output:
        return self._tunnel(conn, buf, partial, conn.in_flow.encap_sport, now)

    def icmp(self, conn: Conn, buf: Buffer, ihl: int, totlen: int, emb: int, el4: int, direction: int,
             now: float) -> Output:
        """ICMP errors from the client side go through the tunnel like the connection's packets.

        GUE's source port is the hash of the packet's own flow (udp_flow_src_port): for an ICMP error,
        its addresses and protocol, not the connection it is about."""
        sport = flow_port(bytes(buf[IP + IP_SRC:IP + IP_SRC + 8]) + bytes((PROTO_ICMP,)), self._seed)
        return self._tunnel(conn, buf, bool(buf[0] & F_NEEDS_CSUM), sport, now)

    @staticmethod
    def inner_quote(buf: Buffer, emb: int, end: int) -> int | None:
        """Where the client's packet starts inside a quoted tunnel packet (IPIP, GUE or GRE), or None."""
        eproto = buf[emb + 9]
        p = emb + ((buf[emb] & 0x0F) << 2)
        if eproto == PROTO_IPIP:
            return p
        if eproto == PROTO_GRE and p + 4 <= end:
            return p + (8 if buf[p] & 0x80 else 4)  # C bit: checksum and reserved word
        if eproto == PROTO_UDP and p + 12 <= end and not buf[p + 8] & 0xC0:
            return p + 12 + ((buf[p + 8] & 0x1F) << 2)  # UDP header, GUE header and its options
        return None

    def icmp_about_own_packet(self, buf: Buffer, ihl: int, totlen: int, emb: int, conns: ConnTable,
                              now: float) -> Output | None:
        """An ICMP error about one of our tunnel packets (sent to the director): tell the client.

        As ip_vs_in_icmp does for tunnels, the client gets a fresh error of the same type about its
        own packet; for fragmentation needed the MTU is reduced by the tunnel overhead, and only if
        the client set DF. None when the quote is not about a tunnel connection of ours."""
        end = IP + totlen
        inner = self.inner_quote(buf, emb, end)
        if inner is None or inner + 24 > end or buf[inner] >> 4 != 4:
            return None
        iproto = buf[inner + 9]
        il4 = inner + ((buf[inner] & 0x0F) << 2)
        if iproto not in (PROTO_TCP, PROTO_UDP, PROTO_SCTP) or il4 + 4 > end:
            return None
        key = bytes(buf[inner + 12:inner + 20]) + bytes(buf[il4:il4 + 4])
        hit = conns.lookup(iproto, key)
        if hit is None or hit[0].forwarder is not self:
            return None
        conn = hit[0]
        body = IP + ihl
        itype, code = buf[body], buf[body + 1]
        mtu = 0
        if itype == icmp.DEST_UNREACH and code == icmp.CODE_FRAG_NEEDED:
            if not buf[inner + 6] & 0x40:
                # the client may fragment; the tunnel will carry its fragments
                return self.egress.drop("icmp_tunnel_no_df")
            mtu = max((buf[body + 6] << 8 | buf[body + 7]) - 20 - encap_layout(conn.in_flow)[1], MIN_MTU)
        # The error is about the client's packet: it comes from the VIP (the quote's destination).
        return self.egress.icmp_error(memoryview(buf)[inner:end], itype, code, mtu, now)

    # -- the packet path --------------------------------------------------------------------

    def _tunnel(self, conn: Conn, buf: Buffer, partial: bool, sport: int, now: float) -> Output:
        egress = self.egress
        f = conn.in_flow
        hop = f.hop or self.hop(f, conn.daddr)
        src = f.outer_src or self._outer_source(f, hop)
        if src is None:
            return egress.drop("tunnel_no_source")
        link_mtu = hop.mtu if hop is not None else egress.interface_for(None).mtu
        mtu = link_mtu - 20 - encap_layout(f)[1]
        if mtu < MIN_MTU:
            return egress.drop("tunnel_mtu")
        # TTL, then DF against what the tunnel leaves of the MTU (a fragmentation needed quotes the
        # packet with its TTL already decremented, as in the kernel).
        refused = egress.refuse(buf, mtu, now)
        if refused is not None:
            return refused
        decrement_ttl(buf)
        ttl = buf[IP + 8]
        totlen = buf[IP + 2] << 8 | buf[IP + 3]
        end = IP + totlen
        tos = ecn_encapsulate(buf[IP + 1])
        df = buf[IP + 6] & 0x40
        gso = buf[1] & ~GSO_ECN
        eth = hop.eth if hop is not None else _NO_MACS
        if gso == GSO_NONE:
            if partial and not complete_partial(buf, end):
                return egress.drop("bad_partial_checksum")
            frames = self._encapsulate(f, src, eth, buf[IP:end], (tos, ttl, df, link_mtu, sport))
        else:
            frames = self._encapsulate_segments(f, src, eth, buf, gso, end, mtu, (tos, ttl, df, link_mtu, sport))
        if hop is None:
            for frame in frames:
                egress.park(conn.daddr, frame, now)
            return NOTHING
        ifindex = hop.ifindex
        return [(ifindex, frame) for frame in frames]

    def _encapsulate_segments(self, r: FlowEntry, src: bytes, eth: bytes, buf: Buffer, gso: int,
                              end: int, mtu: int, outer: Outer) -> list[bytearray]:
        """Cut a GSO super-frame into segments that fit the tunnel, and encapsulate each in place.

        With DF the outer IDs count up from 0, as the kernel's GSO numbers the outer headers of a
        tunnel super-frame whose own ID is 0 (ip_select_ident: DF and no socket)."""
        tos, ttl, df, link_mtu, sport = outer
        ihl = (buf[IP] & 0x0F) << 2
        proto = buf[IP + 9]
        size = buf[4] | buf[5] << 8  # gso_size
        encap_len = encap_layout(r)[1]
        room = VNET_HDR_LEN + 14 + 20 + encap_len
        if gso == GSO_TCPV4 and proto == PROTO_TCP:
            thl = (buf[IP + ihl + 12] >> 4) << 2
            hl = ihl + thl
            if thl < 20 or IP + hl > end or mtu - hl < 8:
                self.egress.drops["malformed"] += 1
                return []
            segs = tcp_segments(buf[IP:end], ihl, min(size, mtu - hl) if size else mtu - hl, room)
        elif gso == GSO_UDP_L4 and proto == PROTO_UDP:
            segs = udp_segments(buf[IP:end], ihl, size, room)  # datagram sizes are the sender's to keep
        else:
            self.egress.drops["gso_unsupported"] += 1
            return []
        # Our segments have valid checksums, so each one's sum is known without reading it again:
        # the IP header sums to zero and the L4 part to minus its pseudo header.
        pseudo = words(buf[IP + 12:IP + 20]) + proto - ihl
        out: list[bytearray] = []
        for i, seg in enumerate(segs):
            n = len(seg) - room
            if 20 + encap_len + n > link_mtu:  # a UDP datagram too big for the tunnel
                out += self._encapsulate(r, src, eth, memoryview(seg)[room:], outer)
                continue
            seg[:room] = self._head(r, src, eth, n, outer, -(pseudo + n) % 0xFFFF, i)
            out.append(seg)
        return out

    def _head(self, r: FlowEntry, src: bytes, eth: bytes, n: int, outer: Outer, inner_sum: int,
              index: int = 0) -> bytes:
        """virtio_net_hdr, Ethernet, outer IPv4 and UDP+GUE or GRE for an `n`-byte inner packet.

        `inner_sum` is the inner packet's one's-complement sum (mod 0xFFFF), for tunnel checksums;
        `index` numbers the segments of one super-frame (their outer IDs with DF).
        """
        tos, ttl, df, _, sport = outer
        proto = encap_layout(r)[0]
        csum = r.flags & F_ENCAP_CSUM
        if proto == PROTO_UDP:
            ulen = 8 + len(GUE_HEADER) + n
            check = 0
            if csum:
                # pseudo header (addresses, protocol, length), UDP header (ports, length), GUE header
                fixed = words(src) + words(r.outer_dst) + PROTO_UDP + sport + r.encap_dport + words(GUE_HEADER)
                check = csum_of((fixed + ulen + ulen + inner_sum) % 0xFFFF) or 0xFFFF
            encap = _UDP.pack(sport, r.encap_dport, ulen, check) + GUE_HEADER
        elif proto == PROTO_GRE:
            if csum:
                encap = GRE_CSUM_HEADER + _H.pack(csum_of((GRE_CSUM_SUM + inner_sum) % 0xFFFF)) + _ZERO2
            else:
                encap = GRE_HEADER
        else:
            encap = b""
        if df:
            ident = index  # ip_select_ident: DF and no socket, ID 0
        else:
            self._ident = ident = (self._ident + 1) & 0xFFFF
        hdr = bytearray(_OUTER.pack(0x45, tos, 20 + len(encap) + n, ident, df << 8, ttl, proto, _ZERO2, src,
                                    r.outer_dst))
        _H.pack_into(hdr, IP_CSUM, csum_of(int.from_bytes(hdr, "big") % 0xFFFF))
        return b"".join((EMPTY_VNET, eth, _ETH_TAIL, hdr, encap))

    def _encapsulate(self, r: FlowEntry, src: bytes, eth: bytes, pkt: Buffer, outer: Outer) -> list[bytearray]:
        """One inner packet as one frame, or as outer fragments if it may be cut and does not fit."""
        n = len(pkt)
        head = self._head(r, src, eth, n, outer, words(pkt) if r.flags & F_ENCAP_CSUM else 0)
        if 20 + encap_layout(r)[1] + n <= outer[3]:
            frame = bytearray(head)
            frame += pkt
            return [frame]
        # No DF (or an ICMP error, which IPVS never refuses): the outer packet is fragmented.
        lead = VNET_HDR_LEN + 14
        payload = head[lead + 20:] + bytes(pkt)
        frames = []
        for h, off in fragments(head[lead:lead + 20], payload, outer[3]):
            frames.append(bytearray(b"".join((head[:lead], h, payload[off:off + (h[2] << 8 | h[3]) - 20]))))
        return frames

    # -- where the tunnel starts ------------------------------------------------------------

    def _outer_source(self, f: FlowEntry, hop: Hop | None) -> bytes | None:
        """The outer source: an address of the egress interface (kept in the recipe once the hop is known)."""
        src = self.egress.source_address(self.egress.interface_for(hop))
        if hop is not None:
            f.outer_src = src
        return src
