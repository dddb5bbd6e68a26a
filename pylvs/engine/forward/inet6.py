"""NAT (NAT66) and direct routing for IPv6 connections: the same recipes as forward/nat.py and dr.py,
on the IPv6 header (addresses at 8 and 24, the hop limit at 7, no header checksum).

IPv6 flows stay in the engine: their FlowEntry recipes are flagged ENGINE_ONLY, so the kernel fast
path never takes them until it executes IPv6 too. Before a packet leaves, Egress6.refuse answers an
exhausted hop limit (Time Exceeded) and a packet longer than the egress MTU (Packet Too Big: IPv6 is
never fragmented on the way).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pylvs.engine.egress import Buffer, Output
from pylvs.engine.egress6 import Egress6
from pylvs.engine.flow import DIR_IN, DIR_OUT, F_ENGINE_ONLY, FlowEntry
from pylvs.engine.forward.base import Forwarder
from pylvs.engine.forward.rewrite import Deltas, finish6
from pylvs.ipvs_uapi import Method
from pylvs.packet import ipv6 as v6
from pylvs.packet.layout import IP, PROTO_UDP, TCP_CSUM, UDP_CSUM
from pylvs.packet.vnet import F_NEEDS_CSUM

if TYPE_CHECKING:
    from pylvs.engine.conntrack import Conn, ConnTable

ADDRS = slice(IP + v6.V6_SRC, IP + v6.V6_DST + 16)  # source + destination: 32 contiguous bytes


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
                                                                 ttl=False), flags=F_ENGINE_ONLY)
        conn.out_flow = FlowEntry(conn.proto, conn.out_key, Method.MASQ, DIR_OUT, conn.vaddr + conn.caddr,
                                  conn.vport + conn.cport, Deltas(conn.daddr, conn.vaddr, conn.dport, conn.vport,
                                                                  ttl=False), flags=F_ENGINE_ONLY)
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
                                 conn.cport + conn.vport, Deltas(b"", b"", b"", b"", ttl=False), flags=F_ENGINE_ONLY)
        return None

    def inbound(self, conn: Conn, buf: Buffer, l4: int, partial: bool, now: float) -> Output:
        f = conn.in_flow
        return self.forward(buf, f.hop or self.hop(f, conn.daddr), conn.daddr, now, True)

    def icmp6(self, conn: Conn, buf: Buffer, l4: int, end: int, emb: int, el4: int, direction: int,
              now: float) -> Output:
        """ICMPv6 errors from the client side about a DR connection go to its real server as they are."""
        f = conn.in_flow
        return self.forward(buf, f.hop or self.hop(f, conn.daddr), conn.daddr, now, True)


FORWARDERS6: dict[Method, type[Forwarder6]] = {Method.MASQ: Nat6, Method.ROUTE: DirectRouting6}
