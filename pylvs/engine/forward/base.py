"""The interface every forwarding method implements (one module per method, as ip_vs_xmit.c has one
transmit function per method).

A forwarder is built with the engine's `Egress` and never sees the engine itself. `bind` runs once
per new connection and gives it its FlowEntry recipes (`conn.in_flow`, and `conn.out_flow` when
replies cross the director) and reply key; `inbound` executes the recipe on client -> real server
packets and `outbound` on replies. Both rewrite `buf` in place (IPv4 header at the fixed offsets of
pylvs.packet.layout, L4 header at `l4`) and return the frames to send.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pylvs.engine.egress import NOTHING, Buffer, Egress, Output
from pylvs.engine.hops import Hop
from pylvs.ipvs_uapi import Method

if TYPE_CHECKING:
    from pylvs.engine.conntrack import Conn, ConnTable
    from pylvs.engine.flow import FlowEntry


class Forwarder:
    method: Method
    # Whether replies come back through the director (NAT, FULLNAT) or go straight to the client.
    sees_replies = False

    def __init__(self, egress: Egress) -> None:
        self.egress = egress

    def bind(self, conn: Conn, conns: ConnTable) -> str | None:
        """Give a new connection its recipes; a drop reason if it cannot be forwarded."""
        raise NotImplementedError

    def inbound(self, conn: Conn, buf: Buffer, l4: int, partial: bool, now: float) -> Output:
        raise NotImplementedError

    def outbound(self, conn: Conn, buf: Buffer, l4: int, partial: bool, now: float) -> Output:
        return NOTHING

    def icmp(self, conn: Conn, buf: Buffer, ihl: int, totlen: int, emb: int, el4: int, direction: int,
             now: float) -> Output:
        """An ICMP error quoting a packet of `conn` (the quote's IP header at `emb`, its L4 at `el4`)."""
        return self.egress.drop("icmp_unsupported")

    def icmp_about_own_packet(self, buf: Buffer, ihl: int, totlen: int, emb: int, conns: ConnTable,
                              now: float) -> Output | None:
        """An ICMP error quoting a packet the director sent from its own address; None if not ours."""
        return None

    def release(self, conn: Conn) -> None:  # noqa: B027 - optional hook
        """Free what `bind` took (local ports, for FULLNAT)."""

    def hop(self, flow: FlowEntry, towards: bytes) -> Hop | None:
        """The flow's next hop, looked up once and then kept in the recipe (hops are shared, updated in place)."""
        hop = flow.hop
        if hop is None:
            hop = flow.hop = self.egress.hop(towards)
        return hop
