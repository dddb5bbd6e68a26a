"""NAT (masquerading, `-m`): DNAT requests to RIP:rport, SNAT replies back to VIP:vport (ipvs.md §4.2)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pylvs.engine.conntrack import DIR_IN
from pylvs.engine.forward.base import Buffer, Forwarder, Output
from pylvs.engine.forward.rewrite import Deltas, finish, set_checksum
from pylvs.packet.layout import (
    ETH,
    ICMP_CSUM,
    IP,
    IP_CSUM,
    IP_DST,
    IP_SRC,
    IP_TTL,
    PROTO_UDP,
    TCP_CSUM,
    UDP_CSUM,
)
from pylvs.packet.vnet import F_NEEDS_CSUM

if TYPE_CHECKING:
    from pylvs.engine.conntrack import Conn
    from pylvs.engine.engine import Engine


class NatRecipe:
    """What every packet of a (service, real server) pair needs; shared by its connections."""

    __slots__ = ("rip", "rport", "vip", "vport", "dnat", "snat")

    def __init__(self, vip: bytes, vport: bytes, rip: bytes, rport: bytes) -> None:
        self.rip, self.rport, self.vip, self.vport = rip, rport, vip, vport
        # Only one address and one port change per direction; the client side stays as is.
        self.dnat = Deltas(vip, rip, vport, rport)
        self.snat = Deltas(rip, vip, rport, vport)


class Nat(Forwarder):
    sees_replies = True

    def __init__(self) -> None:
        self._recipes: dict[tuple[bytes, bytes, bytes, bytes], NatRecipe] = {}

    def bind(self, engine: Engine, conn: Conn) -> bool:
        key = (conn.vaddr, conn.vport, conn.daddr, conn.dport)
        recipe = self._recipes.get(key)
        if recipe is None:
            recipe = self._recipes[key] = NatRecipe(*key)
        conn.recipe = recipe
        # Replies: RIP:rport -> CIP:cport, in the packet's own byte order.
        conn.out_key = conn.daddr + conn.caddr + conn.dport + conn.cport
        return True

    def inbound(self, engine: Engine, conn: Conn, buf: Buffer, l4: int, partial: bool) -> Output:
        hop = conn.in_hop or engine.hop_for(conn, conn.daddr, True)
        r: NatRecipe = conn.recipe
        buf[IP + IP_DST:IP + IP_DST + 4] = r.rip
        buf[l4 + 2:l4 + 4] = r.rport
        return self._send(engine, conn, buf, l4, partial, r.dnat, hop, conn.daddr)

    def outbound(self, engine: Engine, conn: Conn, buf: Buffer, l4: int, partial: bool) -> Output:
        hop = conn.out_hop or engine.hop_for(conn, conn.caddr, False)
        r: NatRecipe = conn.recipe
        buf[IP + IP_SRC:IP + IP_SRC + 4] = r.vip
        buf[l4:l4 + 2] = r.vport
        return self._send(engine, conn, buf, l4, partial, r.snat, hop, conn.caddr)

    @staticmethod
    def _send(engine: Engine, conn: Conn, buf: Buffer, l4: int, partial: bool, d: Deltas, hop,
              nexthop_for: bytes) -> Output:
        udp = conn.proto == PROTO_UDP
        if hop is None:
            # Rewrite now, set MACs when the neighbour answers.
            if not finish(buf, l4, UDP_CSUM if udp else TCP_CSUM, d, partial, udp, engine.NO_HOP):
                return engine.ttl_exceeded(buf)
            return engine.park(nexthop_for, buf)
        if not finish(buf, l4, UDP_CSUM if udp else TCP_CSUM, d, partial, udp, hop):
            return engine.ttl_exceeded(buf)
        return [(hop.ifindex, buf)]

    def icmp(self, engine: Engine, conn: Conn, buf: Buffer, ihl: int, totlen: int, emb: int, el4: int,
             direction: int) -> Output:
        """Translate an ICMP error about a NAT connection (ip_vs_nat_icmp, ipvs.md §3.9)."""
        r: NatRecipe = conn.recipe
        if direction == DIR_IN:  # from the client side, quoting a reply VIP:vport -> CIP:cport
            buf[IP + IP_DST:IP + IP_DST + 4] = r.rip
            buf[emb + IP_SRC:emb + IP_SRC + 4] = r.rip
            buf[el4:el4 + 2] = r.rport
            hop, towards = conn.in_hop or engine.hop_for(conn, conn.daddr, True), conn.daddr
        else:  # from the real server, quoting a request CIP:cport -> RIP:rport
            buf[IP + IP_SRC:IP + IP_SRC + 4] = r.vip
            buf[emb + IP_DST:emb + IP_DST + 4] = r.vip
            buf[el4 + 2:el4 + 4] = r.vport
            hop, towards = conn.out_hop or engine.hop_for(conn, conn.caddr, False), conn.caddr
        ttl = buf[IP + IP_TTL]
        if ttl <= 1:
            return engine.ttl_exceeded(buf)
        buf[IP + IP_TTL] = ttl - 1
        eihl = (buf[emb] & 0x0F) << 2
        set_checksum(buf, emb, emb + eihl, emb + IP_CSUM)
        set_checksum(buf, IP + ihl, IP + totlen, IP + ihl + ICMP_CSUM)
        set_checksum(buf, IP, IP + ihl, IP + IP_CSUM)
        buf[0] &= ~F_NEEDS_CSUM  # the ICMP checksum is complete now
        if hop is None:
            return engine.park(towards, buf)
        buf[ETH:ETH + 12] = hop.eth
        return [(hop.ifindex, buf)]
