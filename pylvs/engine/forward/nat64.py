"""NAT64 through FULLNAT: IPv6 clients of an IPv6 virtual service reach IPv4 real servers from an IPv4
local address, the headers translated as RFC 7915 says (§5.1 IPv6 -> IPv4, §4.1 IPv4 -> IPv6).

The forwarder is FullNat6 with its local ports and client-address delivery (the PROXY protocol v2
carries the client's IPv6 address to an IPv4-only server; TOA its 16 bytes); what differs is the
packet: requests lose their IPv6 header (and extension headers) for an IPv4 one (TOS from the traffic
class, TTL from the hop limit - 1, DF set: the IPv6 sender never expects fragmentation), replies the
other way (hop limit from TTL - 1). Addresses change size, so the L4 checksum is computed afresh over
the new pseudo-header (a partial one gets the new pseudo-header sum, and the virtio_net_hdr's offsets
and GSO type follow the header). The request key is IPv6 (36 bytes), the reply key IPv4 (12): the
IPv4 packet path finds the replies and hands them to `outbound`. ICMP errors are not translated yet.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pylvs.engine.egress import Buffer, Output
from pylvs.engine.egress6 import packet_end
from pylvs.engine.flow import F_ENGINE_ONLY
from pylvs.engine.forward.fullnat import ClientAddress
from pylvs.engine.forward.inet6 import FullNat6
from pylvs.packet import checksum, icmp
from pylvs.packet import ipv6 as v6
from pylvs.packet.layout import ETH_TYPE, IP, PROTO_TCP, TCP_CSUM, UDP_CSUM
from pylvs.packet.vnet import F_NEEDS_CSUM, GSO_ECN, GSO_TCPV4, GSO_TCPV6

if TYPE_CHECKING:
    from pylvs.engine.conntrack import Conn

IPV4_HDR = 20
_GSO_TO_V4 = {GSO_TCPV6: GSO_TCPV4}
_GSO_TO_V6 = {GSO_TCPV4: GSO_TCPV6}


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


def to_ipv4(buf: Buffer, l4: int, end: int, src: bytes, dst: bytes, ports: bytes) -> bytearray:
    """The IPv6 packet in frame `buf` (upper-layer header at `l4`) as an IPv4 frame from `src` to `dst`."""
    proto = v6.walk(buf, end).proto
    tclass = (buf[IP] & 0x0F) << 4 | buf[IP + 1] >> 4
    header = icmp.ipv4_header(src, dst, proto, end - l4, ttl=buf[IP + v6.V6_HLIM] - 1, tos=tclass, df=True)
    out = bytearray(buf[:IP]) + header + buf[l4:end]
    out[ETH_TYPE:ETH_TYPE + 2] = b"\x08\x00"
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
    out[ETH_TYPE:ETH_TYPE + 2] = v6.ETHERTYPE_IPV6.to_bytes(2, "big")
    new_l4 = IP + v6.HDR_LEN
    out[new_l4:new_l4 + 4] = ports
    _move_offloads(out, new_l4 - l4, _GSO_TO_V6)
    _l4_checksum(out, new_l4, proto, src, dst)
    return out


class Nat64(FullNat6):
    def inbound(self, conn: Conn, buf: Buffer, l4: int, partial: bool, now: float) -> Output:
        ca: ClientAddress | None = conn.slow
        if ca is not None:
            rebuilt = self._client_addr_in(conn, ca, buf, l4, partial)
            conn.in_flow.flags |= F_ENGINE_ONLY
            if rebuilt is not None:
                buf = rebuilt
        f = conn.in_flow
        hop = f.hop or self.hop(f, conn.daddr)
        end = packet_end(buf)
        if buf[IP + v6.V6_HLIM] <= 1:
            return self.egress6.refuse(buf, hop, now, True) or []
        if hop is not None and not buf[1] and end - l4 + IPV4_HDR > hop.mtu:
            # What fits the IPv4 link, told in IPv6 terms (the IPv6 header is 20 bytes longer)
            self.egress.drops["packet_too_big"] += 1
            return self.egress6.icmp_error(buf, v6.PACKET_TOO_BIG, 0, max(v6.MIN_MTU, hop.mtu + 20), now)
        out = to_ipv4(buf, l4, end, conn.laddr, conn.daddr, conn.lport + conn.dport)
        return self.egress.send(out, hop, conn.daddr, now)

    def outbound(self, conn: Conn, buf: Buffer, l4: int, partial: bool, now: float) -> Output:
        """A reply of the IPv4 real server (found by the IPv4 packet path): to the client in IPv6."""
        ca: ClientAddress | None = conn.slow
        if ca is not None and ca.pp_header:
            self._client_addr_out(ca, buf, l4, partial)
        f = conn.out_flow
        hop = f.hop or self.hop(f, conn.caddr)
        if buf[IP + 8] <= 1:
            return self.egress.ttl_exceeded(buf, now)
        end = IP + (buf[IP + 2] << 8 | buf[IP + 3])
        if hop is not None and not buf[1] and end - l4 + v6.HDR_LEN > hop.mtu:
            return self.egress.frag_needed(buf, hop.mtu - 20, now)
        out = to_ipv6(buf, l4, end, conn.vaddr, conn.caddr, conn.vport + conn.cport)
        return self.egress6.send(out, hop, conn.caddr, now)
