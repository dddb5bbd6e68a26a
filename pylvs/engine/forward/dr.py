"""Direct routing (`-g`): only the Ethernet addresses change (ipvs.md §4.3).

The real server holds the VIP on a non-ARPing interface and answers the client directly, so the
director sees requests only. As IPVS does, the TTL is decremented (the director routes).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pylvs.engine.egress import Buffer, Output
from pylvs.engine.flow import DIR_IN, FlowEntry
from pylvs.engine.forward.base import Forwarder
from pylvs.engine.forward.rewrite import TTL_ONLY, decrement_ttl
from pylvs.ipvs_uapi import Method
from pylvs.packet.layout import IP, IP_TTL

if TYPE_CHECKING:
    from pylvs.engine.conntrack import Conn, ConnTable


class DirectRouting(Forwarder):
    method = Method.ROUTE
    sees_replies = False

    def bind(self, conn: Conn, conns: ConnTable) -> str | None:
        # Nothing but the TTL and the MACs changes: the recipe's addresses and ports are the packet's own.
        conn.in_flow = FlowEntry(conn.proto, conn.in_key, Method.ROUTE, DIR_IN, conn.caddr + conn.vaddr,
                                 conn.cport + conn.vport, TTL_ONLY)
        return None

    def inbound(self, conn: Conn, buf: Buffer, l4: int, partial: bool, now: float) -> Output:
        f = conn.in_flow
        hop = f.hop or self.hop(f, conn.daddr)
        if buf[IP + IP_TTL] <= 1 or (hop is not None and len(buf) - IP > hop.mtu):
            # time exceeded, or fragmentation needed (Egress.refuse); too big without DF: fragmented by send
            refused = self.egress.refuse(buf, hop.mtu if hop is not None else 0, now)
            if refused is not None:
                return refused
        decrement_ttl(buf)
        return self.egress.send(buf, hop, conn.daddr, now)

    def icmp(self, conn: Conn, buf: Buffer, ihl: int, totlen: int, emb: int, el4: int, direction: int,
             now: float) -> Output:
        """ICMP errors from the client side about a DR connection go to its real server as they are."""
        return self.inbound(conn, buf, IP + ihl, False, now)
