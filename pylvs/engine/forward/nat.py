"""NAT (masquerading, `-m`): DNAT requests to RIP:rport, SNAT replies back to VIP:vport (ipvs.md §4.2).

`AddressRewrite` is the per-packet work NAT and FULLNAT share: the checks before a packet leaves
(Egress.refuse: TTL, DF and MTU, made on the packet as it came, so an ICMP error quotes it so), then
write the recipe's addresses and ports, TTL - 1, patch both checksums by the recipe's deltas, send
(ip_vs_nat_xmit's core; Egress.send fragments what is longer than the link's MTU).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pylvs.engine.conntrack import DIR_IN
from pylvs.engine.egress import Buffer, Output
from pylvs.engine.flow import DIR_OUT, FlowEntry
from pylvs.engine.forward.base import Forwarder
from pylvs.engine.forward.rewrite import Deltas, finish, finish_sctp, set_checksum
from pylvs.ipvs_uapi import PROTO_SCTP, Method
from pylvs.packet.layout import ICMP_CSUM, IP, IP_CSUM, IP_DST, IP_SRC, IP_TTL, PROTO_UDP, TCP_CSUM, UDP_CSUM
from pylvs.packet.vnet import F_NEEDS_CSUM

if TYPE_CHECKING:
    from pylvs.engine.conntrack import Conn, ConnTable


class AddressRewrite(Forwarder):
    sees_replies = True
    # Whether replies are addressed to the director (FULLNAT's local address) or forwarded through it
    # (NAT: to the client); it decides where an ICMP error about one comes from (Egress.refuse).
    replies_local = False

    def inbound(self, conn: Conn, buf: Buffer, l4: int, partial: bool, now: float) -> Output:
        return self.rewrite(conn.in_flow, buf, l4, partial, conn.daddr, now, True)

    def outbound(self, conn: Conn, buf: Buffer, l4: int, partial: bool, now: float) -> Output:
        return self.rewrite(conn.out_flow, buf, l4, partial, conn.caddr, now, self.replies_local)

    def rewrite(self, f: FlowEntry, buf: Buffer, l4: int, partial: bool, towards: bytes, now: float,
                local: bool) -> Output:
        hop = f.hop or self.hop(f, towards)
        if buf[IP + IP_TTL] <= 1 or (hop is not None and len(buf) - IP > hop.mtu):
            refused = self.egress.refuse(buf, hop.mtu if hop is not None else 0, now, local)
            if refused is not None:
                return refused
        buf[IP + IP_SRC:IP + IP_SRC + 8] = f.addrs
        proto = f.proto
        if proto == PROTO_SCTP:
            finish_sctp(buf, l4, f.ports, f.deltas, partial)
            return self.egress.send(buf, hop, towards, now)
        buf[l4:l4 + 4] = f.ports
        udp = proto == PROTO_UDP
        finish(buf, l4, UDP_CSUM if udp else TCP_CSUM, f.deltas, partial, udp)
        return self.egress.send(buf, hop, towards, now)


class Nat(AddressRewrite):
    method = Method.MASQ

    def __init__(self, egress) -> None:
        super().__init__(egress)
        # Both directions' checksum deltas depend only on (VIP, vport, RIP, rport): shared by connections.
        self._deltas: dict[tuple[bytes, bytes, bytes, bytes], tuple[Deltas, Deltas]] = {}

    def bind(self, conn: Conn, conns: ConnTable) -> str | None:
        key = (conn.vaddr, conn.vport, conn.daddr, conn.dport)
        pair = self._deltas.get(key)
        if pair is None:
            pair = self._deltas[key] = (Deltas(conn.vaddr, conn.daddr, conn.vport, conn.dport),
                                        Deltas(conn.daddr, conn.vaddr, conn.dport, conn.vport))
        # Replies: RIP:rport -> CIP:cport, in the packet's own byte order.
        conn.out_key = conn.daddr + conn.caddr + conn.dport + conn.cport
        conn.in_flow = FlowEntry(conn.proto, conn.in_key, Method.MASQ, DIR_IN, conn.caddr + conn.daddr,
                                 conn.cport + conn.dport, pair[0])
        conn.out_flow = FlowEntry(conn.proto, conn.out_key, Method.MASQ, DIR_OUT, conn.vaddr + conn.caddr,
                                  conn.vport + conn.cport, pair[1])
        return None

    def icmp(self, conn: Conn, buf: Buffer, ihl: int, totlen: int, emb: int, el4: int, direction: int,
             now: float) -> Output:
        """Translate an ICMP error about a NAT connection (ip_vs_nat_icmp, ipvs.md §3.9)."""
        ttl = buf[IP + IP_TTL]
        if ttl <= 1:
            return self.egress.ttl_exceeded(buf, now, direction == DIR_IN)  # counted; errors get no error
        if direction == DIR_IN:  # from the client side, quoting a reply VIP:vport -> CIP:cport
            buf[IP + IP_DST:IP + IP_DST + 4] = conn.daddr
            buf[emb + IP_SRC:emb + IP_SRC + 4] = conn.daddr
            buf[el4:el4 + 2] = conn.dport
            flow, towards = conn.in_flow, conn.daddr
        else:  # from the real server, quoting a request CIP:cport -> RIP:rport
            buf[IP + IP_SRC:IP + IP_SRC + 4] = conn.vaddr
            buf[emb + IP_DST:emb + IP_DST + 4] = conn.vaddr
            buf[el4 + 2:el4 + 4] = conn.vport
            flow, towards = conn.out_flow, conn.caddr
        buf[IP + IP_TTL] = ttl - 1
        eihl = (buf[emb] & 0x0F) << 2
        set_checksum(buf, emb, emb + eihl, emb + IP_CSUM)
        set_checksum(buf, IP + ihl, IP + totlen, IP + ihl + ICMP_CSUM)
        set_checksum(buf, IP, IP + ihl, IP + IP_CSUM)
        buf[0] &= ~F_NEEDS_CSUM  # the ICMP checksum is complete now
        return self.egress.send(buf, flow.hop or self.hop(flow, towards), towards, now)
