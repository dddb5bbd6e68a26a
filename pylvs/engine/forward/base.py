"""The interface every forwarding method implements (DESIGN: forward/ — one method each)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pylvs.engine.conntrack import Conn
    from pylvs.engine.engine import Engine

Buffer = bytearray | memoryview
Output = list[tuple[int, Buffer]]


class Forwarder:
    """Rewrites the packets of connections whose real server uses this method.

    `bind` runs once per new connection and stores everything per-packet work needs in the
    connection (`recipe`, reply key, hops); `inbound` handles client -> real server packets and
    `outbound` replies that cross the director. Both rewrite `buf` in place (header at the fixed
    offsets of pylvs.packet.layout, L4 header at `l4`) and return the frames to send.
    """

    # Whether replies come back through the director (NAT, FULLNAT) or go straight to the client.
    sees_replies = False

    def bind(self, engine: Engine, conn: Conn) -> bool:
        """Prepare a new connection; False if it cannot be forwarded (counted by the method)."""
        raise NotImplementedError

    def inbound(self, engine: Engine, conn: Conn, buf: Buffer, l4: int, partial: bool) -> Output:
        raise NotImplementedError

    def outbound(self, engine: Engine, conn: Conn, buf: Buffer, l4: int, partial: bool) -> Output:
        return []

    def release(self, engine: Engine, conn: Conn) -> None:  # noqa: B027 - optional hook
        """Free what `bind` took (local ports, for FULLNAT)."""
