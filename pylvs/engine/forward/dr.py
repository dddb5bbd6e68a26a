"""Direct routing (`-g`): only the Ethernet addresses change (ipvs.md §4.3).

The real server holds the VIP on a non-ARPing interface and answers the client directly, so the
director sees requests only. As IPVS does, the TTL is decremented (the director routes).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pylvs.engine.forward.base import Buffer, Forwarder, Output
from pylvs.engine.forward.rewrite import decrement_ttl
from pylvs.packet import icmp
from pylvs.packet.layout import ETH, IP, IP_TTL

if TYPE_CHECKING:
    from pylvs.engine.conntrack import Conn
    from pylvs.engine.engine import Engine


class DirectRouting(Forwarder):
    sees_replies = False

    def bind(self, engine: Engine, conn: Conn) -> bool:
        conn.recipe = None
        return True

    def inbound(self, engine: Engine, conn: Conn, buf: Buffer, l4: int, partial: bool) -> Output:
        hop = conn.in_hop or engine.hop_for(conn, conn.daddr, True)
        if buf[IP + IP_TTL] <= 1:
            return engine.ttl_exceeded(buf)
        totlen = buf[IP + 2] << 8 | buf[IP + 3]
        if hop is not None and totlen > hop.mtu and buf[IP + 6] & 0x40 and not buf[1]:
            # DF and too big for the real server's link (GSO frames are cut to size later):
            # fragmentation needed, as ip_vs_xmit's ensure_mtu_is_adequate answers.
            engine.drops["frag_needed"] += 1
            return engine.send_ip(icmp.error(conn.vaddr, buf[IP:IP + totlen], icmp.DEST_UNREACH,
                                             icmp.CODE_FRAG_NEEDED, mtu=hop.mtu), 0.0)
        decrement_ttl(buf)
        if hop is None:
            return engine.park(conn.daddr, buf)
        buf[ETH:ETH + 12] = hop.eth
        return [(hop.ifindex, buf)]

    def icmp(self, engine: Engine, conn: Conn, buf: Buffer, ihl: int, totlen: int, emb: int, el4: int,
             direction: int) -> Output:
        """ICMP errors from the client side about a DR connection go to its real server as they are."""
        return self.inbound(engine, conn, buf, IP + ihl, False)
