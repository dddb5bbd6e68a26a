"""FULLNAT: CIP:cport -> VIP:vport becomes LIP:lport -> RIP:rport, and back (ipvs.md §4.6).

Both ends are translated, so the real server only needs a route to the local address (LIP): it may
sit in any network. Local addresses come round-robin from the service's pool; local ports are
taken as the Alibaba LVS kernel does (a per-LIP cursor over [lport_min, lport_max], skipping ports
whose reply key is in use) and are free again when the connection leaves the table.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pylvs.engine.forward.base import Buffer, Forwarder, Output
from pylvs.engine.forward.rewrite import Deltas, finish
from pylvs.packet.layout import IP, IP_SRC, PROTO_UDP, TCP_CSUM, UDP_CSUM

if TYPE_CHECKING:
    from pylvs.engine.conntrack import Conn
    from pylvs.engine.engine import Engine

LPORT_MIN = 5000     # fullnat_lport_min
LPORT_MAX = 65535    # fullnat_lport_max
LPORT_TRIES = 10000  # fullnat_lport_tries


class FullNatRecipe:
    __slots__ = ("in_header", "out_header", "in_deltas", "out_deltas")

    def __init__(self, conn: Conn) -> None:
        client = conn.caddr + conn.vaddr, conn.cport + conn.vport
        local = conn.laddr + conn.daddr, conn.lport + conn.dport
        reply_seen = conn.daddr + conn.laddr, conn.dport + conn.lport
        reply_sent = conn.vaddr + conn.caddr, conn.vport + conn.cport
        # Addresses (8 bytes at IP_SRC) and ports (4 bytes at L4) are rewritten whole.
        self.in_header = local
        self.out_header = reply_sent
        self.in_deltas = Deltas(client[0], local[0], client[1], local[1])
        self.out_deltas = Deltas(reply_seen[0], reply_sent[0], reply_seen[1], reply_sent[1])


class FullNat(Forwarder):
    sees_replies = True

    def bind(self, engine: Engine, conn: Conn) -> bool:
        svc = conn.svc
        pool = svc.laddrs
        if not pool:
            engine.drops["no_local_address"] += 1
            return False
        lookup = engine.conns.by_proto.setdefault(conn.proto, {})
        span = LPORT_MAX - LPORT_MIN + 1
        for _ in range(len(pool)):
            laddr = pool[svc.laddr_cursor % len(pool)]
            svc.laddr_cursor += 1
            for _ in range(min(LPORT_TRIES, span)):
                laddr.next_port = (laddr.next_port + 1) % span
                lport = (LPORT_MIN + laddr.next_port).to_bytes(2, "big")
                out_key = conn.daddr + laddr.addr + conn.dport + lport
                if out_key not in lookup:
                    conn.laddr, conn.lport, conn.out_key = laddr.addr, lport, out_key
                    conn.recipe = FullNatRecipe(conn)
                    conn.local = laddr
                    laddr.conns += 1
                    return True
                laddr.conflicts += 1
        engine.drops["no_local_port"] += 1
        return False

    def release(self, engine: Engine, conn: Conn) -> None:
        conn.local.conns -= 1

    def inbound(self, engine: Engine, conn: Conn, buf: Buffer, l4: int, partial: bool) -> Output:
        r: FullNatRecipe = conn.recipe
        buf[IP + IP_SRC:IP + IP_SRC + 8] = r.in_header[0]
        buf[l4:l4 + 4] = r.in_header[1]
        hop = conn.in_hop or engine.hop_for(conn, conn.daddr, True)
        return self._send(engine, conn, buf, l4, partial, r.in_deltas, hop, conn.daddr)

    def outbound(self, engine: Engine, conn: Conn, buf: Buffer, l4: int, partial: bool) -> Output:
        r: FullNatRecipe = conn.recipe
        buf[IP + IP_SRC:IP + IP_SRC + 8] = r.out_header[0]
        buf[l4:l4 + 4] = r.out_header[1]
        hop = conn.out_hop or engine.hop_for(conn, conn.caddr, False)
        return self._send(engine, conn, buf, l4, partial, r.out_deltas, hop, conn.caddr)

    @staticmethod
    def _send(engine: Engine, conn: Conn, buf: Buffer, l4: int, partial: bool, d: Deltas, hop,
              towards: bytes) -> Output:
        udp = conn.proto == PROTO_UDP
        if not finish(buf, l4, UDP_CSUM if udp else TCP_CSUM, d, partial, udp, hop or engine.NO_HOP):
            return engine.ttl_exceeded(buf)
        if hop is None:
            return engine.park(towards, buf)
        return [(hop.ifindex, buf)]
