"""Where IPv6 frames go: the IPv6 counterpart of Egress's checks and originated messages.

Next hops, sending and parking are the engine's `Egress` (family-blind: addresses are 16 bytes
here). What differs is before a packet leaves: IPv6 routers never fragment, so a packet longer than
the egress link's MTU is answered with Packet Too Big whatever its flags (RFC 8200 §5), and the hop
limit ends in Time Exceeded; ICMPv6 errors are made as icmp6_send makes them (RFC 4443: from the
packet's destination when it was addressed to the director, never about an ICMPv6 error, quoting
up to the minimum MTU) and rate-limited per destination as Egress limits ICMP (Packet Too Big
exempt, as the kernel's icmpv6_xrlim_allow).
"""

from __future__ import annotations

from pylvs.engine.egress import Egress, Output
from pylvs.engine.hops import Hop
from pylvs.packet import ipv6 as v6
from pylvs.packet.layout import ETH, IP, Buffer
from pylvs.packet.vnet import EMPTY as EMPTY_VNET

_ETH_IPV6 = bytes(12) + v6.ETHERTYPE_IPV6.to_bytes(2, "big")


def packet_end(buf: Buffer) -> int:
    """The frame offset where the IPv6 packet ends (Ethernet padding excluded)."""
    return min(IP + v6.HDR_LEN + (buf[IP + v6.V6_PLEN] << 8 | buf[IP + v6.V6_PLEN + 1]), len(buf))


class Egress6:
    def __init__(self, egress: Egress) -> None:
        self.egress = egress

    def hop(self, addr: bytes) -> Hop | None:
        return self.egress.routes.hop(addr)

    def send(self, buf: Buffer, hop: Hop | None, towards: bytes, now: float) -> Output:
        if hop is None:
            return self.egress.park(towards, buf, now)
        buf[ETH:ETH + 12] = hop.eth
        return [(hop.ifindex, buf)]

    def refuse(self, buf: Buffer, hop: Hop | None, now: float, local: bool) -> Output | None:
        """Hop limit 1 or less: Time Exceeded; longer than the egress MTU (GSO super-frames aside: they
        are cut to size later): Packet Too Big. None when the packet may go on."""
        if buf[IP + v6.V6_HLIM] <= 1:
            self.egress.drops["ttl_exceeded"] += 1
            return self.icmp_error(buf, v6.TIME_EXCEEDED, v6.CODE_HOP_LIMIT, 0, now, local)
        if hop is not None and packet_end(buf) - IP > hop.mtu and not buf[1]:
            self.egress.drops["packet_too_big"] += 1
            return self.icmp_error(buf, v6.PACKET_TOO_BIG, 0, hop.mtu, now, local)
        return None

    def icmp_error(self, buf: Buffer, icmp_type: int, code: int, info: int, now: float,
                   local: bool = True) -> Output:
        """Tell the sender of the IPv6 packet in frame `buf` about it."""
        packet = memoryview(buf)[IP:packet_end(buf)]
        parsed = v6.walk(buf, packet_end(buf))
        if v6.is_error_about_error(packet, parsed) or packet[v6.V6_SRC] == 0xFF:
            return []
        dst = bytes(packet[v6.V6_SRC:v6.V6_SRC + 16])
        if icmp_type != v6.PACKET_TOO_BIG and not self.egress.allow_icmp(dst, now):
            return self.egress.drop("icmp_rate_limited")
        src = bytes(packet[v6.V6_DST:v6.V6_DST + 16]) if local else self.source_address(self.hop(dst))
        if src is None:
            return []
        return self.send_ip(v6.error(src, packet, icmp_type, code, info), now)

    def send_ip(self, packet: bytes, now: float) -> Output:
        """Route and emit an IPv6 packet the director originates."""
        dst = packet[v6.V6_DST:v6.V6_DST + 16]
        return self.send(bytearray(EMPTY_VNET + _ETH_IPV6 + packet), self.hop(dst), dst, now)

    def source_address(self, hop: Hop | None) -> bytes | None:
        """The director's own IPv6 address on the egress interface of `hop` (its lowest not owned); while
        the neighbour is unknown, that of the first interface with one."""
        interfaces = self.egress.interfaces
        ifaces = [interfaces.get(hop.ifindex)] if hop is not None else [interfaces[i] for i in sorted(interfaces)]
        for iface in ifaces:
            mine = sorted(a for a in iface.addrs6 if a not in self.egress.owned) if iface is not None else []
            if mine:
                return mine[0]
        return None

    def own(self, addr: bytes) -> bool:
        """Whether `addr` is one of the director's own IPv6 addresses (a tunnel's source)."""
        return any(addr in iface.addrs6 for iface in self.egress.interfaces.values())

