"""NAT (NAT66), direct routing, IPv6-in-IPv6 tunnels and FULLNAT for IPv6 connections: the same recipes
as forward/nat.py, dr.py, tun.py and fullnat.py, on the IPv6 header (addresses at 8 and 24, the hop
limit at 7, no header checksum).

The kernel fast path executes these recipes as it does IPv4 ones (pylvs_fastpath6.h), except GUE over
IPv6 and GRE with a checksum (the checksum covers the whole inner packet), FULLNAT before its client
address is delivered and NAT64: those are flagged ENGINE_ONLY. Before a packet leaves, Egress6.refuse answers an
exhausted hop limit (Time Exceeded) and a packet longer than the egress MTU (Packet Too Big: IPv6 is
never fragmented on the way).
"""

from __future__ import annotations

import secrets
import struct
from typing import TYPE_CHECKING

from pylvs.engine.egress import Buffer, Output
from pylvs.engine.egress6 import Egress6, packet_end
from pylvs.engine.flow import (
    DIR_IN,
    DIR_OUT,
    ENCAP_BY_TUN_TYPE,
    ENCAP_GRE,
    ENCAP_GUE,
    F_ENCAP_CSUM,
    F_ENGINE_ONLY,
    FlowEntry,
)
from pylvs.engine.forward.base import Forwarder
from pylvs.engine.forward.fullnat import ClientAddress, FullNat
from pylvs.engine.forward.rewrite import Deltas, finish6
from pylvs.engine.forward.tun import ecn_encapsulate, flow_port
from pylvs.ipvs_uapi import Method
from pylvs.packet import checksum
from pylvs.packet import ipv6 as v6
from pylvs.packet.layout import IP, PROTO_UDP, TCP_CSUM, UDP_CSUM
from pylvs.packet.offload import complete_partial
from pylvs.packet.vnet import EMPTY as EMPTY_VNET
from pylvs.packet.vnet import F_NEEDS_CSUM, GSO_ECN, GSO_TCPV6

if TYPE_CHECKING:
    from pylvs.engine.conntrack import Conn, ConnTable

ADDRS = slice(IP + v6.V6_SRC, IP + v6.V6_DST + 16)  # source + destination: 32 contiguous bytes
_ETH_IPV6 = bytes(12) + v6.ETHERTYPE_IPV6.to_bytes(2, "big")
NH_GRE = 47
GRE6_HEADER = b"\x00\x00\x86\xdd"  # no C/K/S bits, version 0, protocol IPv6
GRE6_CSUM_HEADER = b"\x80\x00\x86\xdd"  # C bit: the checksum and a reserved word follow
GUE6_HEADER = b"\x00\x29\x00\x00"  # GUE version 0, hlen 0, proto_ctype 41 (IPv6), flags 0


class Forwarder6(Forwarder):
    def __init__(self, egress, egress6: Egress6) -> None:
        super().__init__(egress)
        self.egress6 = egress6

    def icmp6(self, conn: Conn, buf: Buffer, l4: int, end: int, emb: int, el4: int, direction: int,
              now: float) -> Output:
        """An ICMPv6 error quoting a packet of `conn` (the quote's IPv6 header at `emb`, its L4 at `el4`)."""
        return self.egress.drop("icmp_unsupported")

    def forward(self, buf: Buffer, hop, towards: bytes, now: float, local: bool) -> Output:
        """The checks, then the hop limit - 1 and out (for packets whose checksums need nothing else)."""
        refused = self.egress6.refuse(buf, hop, now, local)
        if refused is not None:
            return refused
        buf[IP + v6.V6_HLIM] -= 1
        return self.egress6.send(buf, hop, towards, now)


class Nat6(Forwarder6):
    method = Method.MASQ
    sees_replies = True

    def bind(self, conn: Conn, conns: ConnTable) -> str | None:
        conn.out_key = conn.daddr + conn.caddr + conn.dport + conn.cport
        conn.in_flow = FlowEntry(conn.proto, conn.in_key, Method.MASQ, DIR_IN, conn.caddr + conn.daddr,
                                 conn.cport + conn.dport, Deltas(conn.vaddr, conn.daddr, conn.vport, conn.dport,
                                                                 ttl=False))
        conn.out_flow = FlowEntry(conn.proto, conn.out_key, Method.MASQ, DIR_OUT, conn.vaddr + conn.caddr,
                                  conn.vport + conn.cport, Deltas(conn.daddr, conn.vaddr, conn.dport, conn.vport,
                                                                  ttl=False))
        return None

    def inbound(self, conn: Conn, buf: Buffer, l4: int, partial: bool, now: float) -> Output:
        return self.rewrite(conn.in_flow, buf, l4, partial, conn.daddr, now, True)

    def outbound(self, conn: Conn, buf: Buffer, l4: int, partial: bool, now: float) -> Output:
        return self.rewrite(conn.out_flow, buf, l4, partial, conn.caddr, now, False)

    def rewrite(self, f: FlowEntry, buf: Buffer, l4: int, partial: bool, towards: bytes, now: float,
                local: bool) -> Output:
        hop = f.hop or self.hop(f, towards)
        refused = self.egress6.refuse(buf, hop, now, local)
        if refused is not None:
            return refused
        buf[ADDRS] = f.addrs
        buf[l4:l4 + 4] = f.ports
        udp = f.proto == PROTO_UDP
        finish6(buf, l4, UDP_CSUM if udp else TCP_CSUM, f.deltas, partial, udp)
        return self.egress6.send(buf, hop, towards, now)

    def icmp6(self, conn: Conn, buf: Buffer, l4: int, end: int, emb: int, el4: int, direction: int,
              now: float) -> Output:
        """Translate an ICMPv6 error about a NAT connection (ip_vs_nat_icmp_v6): the outer address and the
        quoted address and port that face the other side, then the ICMPv6 checksum afresh."""
        if direction == DIR_IN:  # from the client side, quoting a reply VIP:vport -> CIP:cport
            buf[IP + v6.V6_DST:IP + v6.V6_DST + 16] = conn.daddr
            buf[emb + v6.V6_SRC:emb + v6.V6_SRC + 16] = conn.daddr
            buf[el4:el4 + 2] = conn.dport
            flow, towards = conn.in_flow, conn.daddr
        else:  # from the real server's side, quoting a request CIP:cport -> RIP:rport
            buf[IP + v6.V6_SRC:IP + v6.V6_SRC + 16] = conn.vaddr
            buf[emb + v6.V6_DST:emb + v6.V6_DST + 16] = conn.vaddr
            buf[el4 + 2:el4 + 4] = conn.vport
            flow, towards = conn.out_flow, conn.caddr
        if buf[IP + v6.V6_HLIM] <= 1:
            return self.egress.drop("ttl_exceeded")  # an error is never answered with another
        buf[IP + v6.V6_HLIM] -= 1
        buf[l4 + 2] = buf[l4 + 3] = 0
        packet = memoryview(buf)[IP:end]
        buf[l4 + 2:l4 + 4] = v6.l4_checksum(packet, l4 - IP, v6.NH_ICMPV6).to_bytes(2, "big")
        buf[0] &= ~F_NEEDS_CSUM  # the checksum is complete now
        return self.egress6.send(buf, flow.hop or self.hop(flow, towards), towards, now)


class DirectRouting6(Forwarder6):
    method = Method.ROUTE
    sees_replies = False

    def bind(self, conn: Conn, conns: ConnTable) -> str | None:
        conn.in_flow = FlowEntry(conn.proto, conn.in_key, Method.ROUTE, DIR_IN, conn.caddr + conn.vaddr,
                                 conn.cport + conn.vport, Deltas(b"", b"", b"", b"", ttl=False))
        return None

    def inbound(self, conn: Conn, buf: Buffer, l4: int, partial: bool, now: float) -> Output:
        f = conn.in_flow
        return self.forward(buf, f.hop or self.hop(f, conn.daddr), conn.daddr, now, True)

    def icmp6(self, conn: Conn, buf: Buffer, l4: int, end: int, emb: int, el4: int, direction: int,
              now: float) -> Output:
        """ICMPv6 errors from the client side about a DR connection go to its real server as they are."""
        f = conn.in_flow
        return self.forward(buf, f.hop or self.hop(f, conn.daddr), conn.daddr, now, True)




class Tunnel6(Forwarder6):
    """IPv6 in IPv6 (`-i`, tun-type ipip: next header 41, RFC 2473) or in GRE over IPv6 (tun-type gre:
    next header 47, protocol 0x86DD, with --tun-csum the checksum word), as ip_vs_tunnel_xmit_v6: the
    request, hop limit - 1, inside a header from the director's address on the egress link to the real
    server; the outer hop limit and traffic class (ECN as encapsulated) come from the inner. GUE over
    IPv6 (tun-type gue: UDP from a flow-hashed port to the GUE port, proto_ctype 41) always carries its
    UDP checksum (IPv6 requires it). Partial checksums are completed first and TCP super-frames cut to
    their MSS (no device would finish an inner checksum or cut a tunnelled packet); other GSO types are
    dropped (`gso_unsupported`)."""

    method = Method.TUNNEL
    sees_replies = False

    def __init__(self, egress, egress6: Egress6) -> None:
        super().__init__(egress, egress6)
        self._seed = secrets.randbits(32)

    def bind(self, conn: Conn, conns: ConnTable) -> str | None:
        tun_type = conn.dest.tun_type
        if tun_type == "gue" and not conn.dest.tun_port:
            return "tunnel_no_port"
        if tun_type not in ("ipip", "gre", "gue"):
            return "method_unsupported"
        f = FlowEntry(conn.proto, conn.in_key, Method.TUNNEL, DIR_IN, conn.caddr + conn.vaddr,
                      conn.cport + conn.vport, Deltas(b"", b"", b"", b"", ttl=False))
        f.encap = ENCAP_BY_TUN_TYPE[tun_type]
        if tun_type == "gue" or (tun_type == "gre" and conn.dest.tun_flags in ("csum", "remcsum")):
            # A checksum over the whole inner packet: the fast path cannot give GSO frames one.
            f.flags |= F_ENCAP_CSUM | F_ENGINE_ONLY
        f.outer_dst = conn.daddr
        f.encap_dport = conn.dest.tun_port
        f.encap_sport = flow_port(conn.in_key + bytes((conn.proto,)), self._seed)
        conn.in_flow = f
        return None

    def inbound(self, conn: Conn, buf: Buffer, l4: int, partial: bool, now: float) -> Output:
        return self.encapsulate(conn, buf, now)

    def icmp6(self, conn: Conn, buf: Buffer, l4: int, end: int, emb: int, el4: int, direction: int,
              now: float) -> Output:
        """ICMPv6 errors from the client side go through the tunnel like the connection's packets."""
        return self.encapsulate(conn, buf, now)

    def encapsulate(self, conn: Conn, buf: Buffer, now: float) -> Output:
        if buf[1]:  # a GSO super-frame: no device would cut a tunnelled one, so it is cut here
            return self.segmented(conn, buf, now)
        f = conn.in_flow
        hop = f.hop or self.hop(f, conn.daddr)
        end = packet_end(buf)
        if buf[IP + v6.V6_HLIM] <= 1:
            return self.egress6.refuse(buf, hop, now, True) or []
        overhead = v6.HDR_LEN + self.encap_len(f)
        if hop is not None and end - IP + overhead > hop.mtu:
            self.egress.drops["packet_too_big"] += 1
            return self.egress6.icmp_error(buf, v6.PACKET_TOO_BIG, 0, hop.mtu - overhead, now)
        if buf[0] & F_NEEDS_CSUM and not complete_partial(buf, end):
            return self.egress.drop("bad_partial_checksum")
        src = self.egress6.source_address(hop)
        if src is None:
            return self.egress.drop("tunnel_no_source")
        if hop is not None:
            f.outer_src = src  # the recipe's tunnel source, once its egress link is known
        buf[IP + v6.V6_HLIM] -= 1
        inner = bytes(buf[IP:end])
        tclass = ecn_encapsulate((inner[0] & 0x0F) << 4 | inner[1] >> 4)
        hlim = inner[v6.V6_HLIM]
        nh = v6.NH_IPV6
        if f.encap == ENCAP_GRE:
            nh, inner = NH_GRE, self.gre(f, inner)
        elif f.encap == ENCAP_GUE:
            nh, inner = v6.NH_UDP, self.gue(f, src, conn.daddr, inner)
        outer = v6.header(src, conn.daddr, nh, len(inner), hlim, tclass)
        frame = bytearray(EMPTY_VNET + _ETH_IPV6 + outer + inner)
        return self.egress6.send(frame, hop, conn.daddr, now)

    def segmented(self, conn: Conn, buf: Buffer, now: float) -> Output:
        """A TCP/IPv6 super-frame cut into MSS-sized packets (software GSO), each tunnelled on its own."""
        gso_size = buf[4] | buf[5] << 8
        if buf[1] & ~GSO_ECN != GSO_TCPV6:
            return self.egress.drop("gso_unsupported")
        pieces = v6.tcp_segments(memoryview(buf)[IP:packet_end(buf)], gso_size)
        if pieces is None:
            return self.egress.drop("gso_unsupported")
        out: Output = []
        lead = bytes(buf[:IP])
        for piece in pieces:
            frame = bytearray(lead + piece)
            frame[0:10] = EMPTY_VNET
            out += self.encapsulate(conn, frame, now)
        return out

    @staticmethod
    def encap_len(f: FlowEntry) -> int:
        """The bytes between the outer IPv6 header and the inner packet."""
        if f.encap == ENCAP_GUE:
            return 8 + len(GUE6_HEADER)
        return 0 if f.encap != ENCAP_GRE else 8 if f.flags & F_ENCAP_CSUM else 4

    @staticmethod
    def gue(f: FlowEntry, src: bytes, dst: bytes, inner: bytes) -> bytes:
        """UDP (checksum included) and the GUE header in front of the packet."""
        length = 8 + len(GUE6_HEADER) + len(inner)
        udp = bytearray(struct.pack("!HHHH", f.encap_sport, f.encap_dport, length, 0) + GUE6_HEADER + inner)
        c = checksum.checksum(udp, v6.pseudo_sum(src, dst, v6.NH_UDP, length)) or 0xFFFF
        udp[6:8] = c.to_bytes(2, "big")
        return bytes(udp)

    @staticmethod
    def gre(f: FlowEntry, inner: bytes) -> bytes:
        """The GRE header (RFC 2784: protocol 0x86DD; with the checksum word when asked) and the packet."""
        if not f.flags & F_ENCAP_CSUM:
            return GRE6_HEADER + inner
        c = checksum.checksum(GRE6_CSUM_HEADER + bytes(4) + inner)
        return GRE6_CSUM_HEADER + c.to_bytes(2, "big") + b"\0\0" + inner

    @staticmethod
    def inner_quote(buf: Buffer, proto: int, at: int, end: int) -> int | None:
        """Where the client's packet starts in a quoted tunnel packet whose upper layer (`proto`, 41 or GRE)
        is at `at`, or None."""
        if proto == v6.NH_IPV6:
            return at
        if proto == NH_GRE and at + 4 <= end and buf[at + 2:at + 4] == GRE6_HEADER[2:]:
            return at + (8 if buf[at] & 0x80 else 4)
        if proto == v6.NH_UDP and at + 12 <= end and buf[at + 8] >> 6 == 0 and buf[at + 9] == v6.NH_IPV6:
            return at + 12 + ((buf[at + 8] & 0x1F) << 2)  # UDP header, GUE header and its options
        return None

    def about_own_packet(self, buf: Buffer, emb: int, inner: int, end: int, conns: ConnTable,
                         now: float) -> Output | None:
        """An ICMPv6 error about one of our tunnel packets (quoted at `emb`, the client's packet at `inner`):
        for Packet Too Big, the client is told the MTU less the tunnel headers (at least 1280), quoting its
        own packet, as ip_vs_in_icmp_v6 does; other errors stop here. None if the quote is of no connection."""
        if end - inner < v6.HDR_LEN + 4:
            return None
        q = v6.walk(buf, end, inner)
        if q is None or q.proto not in (6, 17) or end - q.l4 < 4:
            return None
        key = bytes(buf[inner + v6.V6_SRC:inner + v6.V6_DST + 16]) + bytes(buf[q.l4:q.l4 + 4])
        hit = conns.lookup(q.proto, key)
        if hit is None or hit[1] != DIR_IN or hit[0].forwarder is not self:
            return None
        if buf[IP + v6.HDR_LEN] != v6.PACKET_TOO_BIG:
            return []
        reported = int.from_bytes(buf[IP + v6.HDR_LEN + 4:IP + v6.HDR_LEN + 8], "big")
        mtu = max(v6.MIN_MTU, reported - (inner - emb))
        quote = bytearray(EMPTY_VNET + _ETH_IPV6) + buf[inner:end]
        return self.egress6.icmp_error(quote, v6.PACKET_TOO_BIG, 0, mtu, now)


class FullNat6(FullNat):
    """FULLNAT between IPv6 addresses (IPv6 local addresses of the service): FullNat's local ports and
    client-address delivery (TOA with the 16-byte address, PROXY protocol TCP6) and recipes (TCP requests
    engine-only until TOA is delivered, both directions under the PROXY protocol; NAT64's for life), on
    the IPv6 header."""

    def __init__(self, egress, egress6: Egress6) -> None:
        super().__init__(egress)
        self.egress6 = egress6

    @staticmethod
    def _flows(conn: Conn) -> None:
        FullNat._flows(conn)
        if len(conn.daddr) != len(conn.caddr):  # NAT64 (and NAT46): the fast path never changes a family
            conn.in_flow.flags |= F_ENGINE_ONLY
            conn.out_flow.flags |= F_ENGINE_ONLY

    def inbound(self, conn: Conn, buf: Buffer, l4: int, partial: bool, now: float) -> Output:
        ca: ClientAddress | None = conn.slow
        if ca is not None:
            f = conn.in_flow
            hop = f.hop or self.hop(f, conn.daddr)
            refused = self.egress6.refuse(buf, hop, now, True)
            if refused is not None:
                return refused
            rebuilt = self._client_addr_in(conn, ca, buf, l4, partial)
            if rebuilt is not None:
                rebuilt[0] &= ~F_NEEDS_CSUM  # the checksum of the longer packet is computed in full
                return self._send_rebuilt(conn, rebuilt, l4, now)
        return self.rewrite(conn.in_flow, buf, l4, partial, conn.daddr, now, True)

    rewrite = Nat6.rewrite  # the per-packet work of NAT66, on this connection's recipes

    def _send_rebuilt(self, conn: Conn, buf: bytearray, l4: int, now: float) -> Output:  # type: ignore[override]
        """A packet that grew (TOA or the PROXY header): addresses and ports written, checksum afresh."""
        f = conn.in_flow
        buf[ADDRS] = f.addrs
        buf[l4:l4 + 4] = f.ports
        buf[IP + v6.V6_HLIM] -= 1
        buf[l4 + TCP_CSUM] = buf[l4 + TCP_CSUM + 1] = 0
        packet = memoryview(buf)[IP:packet_end(buf)]
        buf[l4 + TCP_CSUM:l4 + TCP_CSUM + 2] = v6.l4_checksum(packet, l4 - IP, v6.NH_TCP).to_bytes(2, "big")
        return self.egress6.send(buf, f.hop or self.hop(f, conn.daddr), conn.daddr, now)

    def icmp6(self, conn: Conn, buf: Buffer, l4: int, end: int, emb: int, el4: int, direction: int,
              now: float) -> Output:
        return self.translated_error(conn, buf, l4, end, emb, el4, direction, now)

    def send_error(self, frame: bytearray, hop, towards: bytes, now: float) -> Output:
        """A translated error goes out in the family of its destination (NAT64 and NAT46 cross over)."""
        send = self.egress6.send if len(towards) == 16 else self.egress.send
        return send(frame, hop, towards, now)


FORWARDERS6: dict[Method, type[Forwarder]] = {
    Method.MASQ: Nat6, Method.ROUTE: DirectRouting6, Method.TUNNEL: Tunnel6, Method.FULLNAT: FullNat6}
