"""NAT64 through FULLNAT: IPv6 clients of an IPv6 virtual service reach IPv4 real servers from an IPv4
local address, the headers translated as RFC 7915 says (§5.1 IPv6 -> IPv4, §4.1 IPv4 -> IPv6).

The forwarder is FullNat6 with its local ports and client-address delivery (the PROXY protocol v2
carries the client's IPv6 address to an IPv4-only server; TOA its 16 bytes); what differs is the
packet: requests lose their IPv6 header (and extension headers) for an IPv4 one (TOS from the traffic
class, TTL from the hop limit - 1, DF set above 1260 bytes as §5.1 says), replies the
other way (hop limit from TTL - 1); forward/translate.py does the translating. The request key is
IPv6 (36 bytes), the reply key IPv4 (12): the IPv4 packet path finds the replies and hands them to
`outbound`. ICMP errors about the connection are translated by FullNat.translated_error.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pylvs.engine.egress import Buffer, Output
from pylvs.engine.egress6 import packet_end
from pylvs.engine.flow import F_ENGINE_ONLY, FlowEntry
from pylvs.engine.forward.fullnat import ClientAddress
from pylvs.engine.forward.inet6 import FullNat6
from pylvs.engine.forward.translate import HDR_GROWTH, IPV4_HDR, ipv6_fragments, to_ipv4, to_ipv6
from pylvs.packet import ipv6 as v6
from pylvs.packet.layout import IP, IP_DF
from pylvs.packet.vnet import F_NEEDS_CSUM

if TYPE_CHECKING:
    from pylvs.engine.conntrack import Conn


class Nat64(FullNat6):
    """Requests translated to the real server's family, replies to the client's (Nat46 swaps the two)."""

    def inbound(self, conn: Conn, buf: Buffer, l4: int, partial: bool, now: float) -> Output:
        ca: ClientAddress | None = conn.slow
        if ca is not None:
            rebuilt = self._client_addr_in(conn, ca, buf, l4, partial)
            conn.in_flow.flags |= F_ENGINE_ONLY
            if rebuilt is not None:
                buf = rebuilt
        return self.to_server(buf, l4, conn.in_flow, conn.laddr, conn.daddr, conn.lport + conn.dport, now)

    def outbound(self, conn: Conn, buf: Buffer, l4: int, partial: bool, now: float) -> Output:
        """A reply of the real server (found by the other family's packet path), translated for the client."""
        ca: ClientAddress | None = conn.slow
        if ca is not None and ca.pp_header:
            self._client_addr_out(ca, buf, l4, partial)
        return self.to_client(buf, l4, conn.out_flow, conn.vaddr, conn.caddr, conn.vport + conn.cport, now)

    def as_ipv4(self, buf: Buffer, l4: int, f: FlowEntry, src: bytes, towards: bytes, ports: bytes,
                now: float) -> Output:
        """The IPv6 packet in `buf` as IPv4 from `src` to `towards` with `ports`, on `f`'s hop."""
        hop = f.hop or self.hop(f, towards)
        end = packet_end(buf)
        if buf[IP + v6.V6_HLIM] <= 1:
            return self.egress6.refuse(buf, hop, now, True) or []
        if hop is not None and not buf[1] and end - l4 + IPV4_HDR > hop.mtu:
            # What fits the IPv4 link, told in IPv6 terms (the IPv6 header is 20 bytes longer)
            self.egress.drops["packet_too_big"] += 1
            return self.egress6.icmp_error(buf, v6.PACKET_TOO_BIG, 0, max(v6.MIN_MTU, hop.mtu + HDR_GROWTH), now)
        out = to_ipv4(buf, l4, end, src, towards, ports)
        return self.egress.send(out, hop, towards, now)

    def as_ipv6(self, buf: Buffer, l4: int, f: FlowEntry, src: bytes, towards: bytes, ports: bytes,
                now: float) -> Output:
        """The IPv4 packet in `buf` as IPv6 from `src` to `towards` with `ports`, on `f`'s hop:
        too long for the link, it is refused when DF is set and cut into IPv6 fragments when not (§4.1)."""
        hop = f.hop or self.hop(f, towards)
        if buf[IP + 8] <= 1:
            return self.egress.ttl_exceeded(buf, now)
        end = IP + (buf[IP + 2] << 8 | buf[IP + 3])
        too_big = hop is not None and not buf[1] and end - l4 + v6.HDR_LEN > hop.mtu
        if too_big and buf[IP + 6] & IP_DF >> 8:
            return self.egress.frag_needed(buf, hop.mtu - HDR_GROWTH, now)
        if too_big:
            buf[0] &= ~F_NEEDS_CSUM  # the checksum is computed in full: fragments carry no partial one
        out = to_ipv6(buf, l4, end, src, towards, ports)
        if not too_big:
            return self.egress6.send(out, hop, towards, now)
        ident = buf[IP + 4] << 8 | buf[IP + 5]
        pieces = ipv6_fragments(out, ident, hop.mtu)  # type: ignore[union-attr]
        return [sent for piece in pieces for sent in self.egress6.send(piece, hop, towards, now)]

    to_server = as_ipv4
    to_client = as_ipv6
