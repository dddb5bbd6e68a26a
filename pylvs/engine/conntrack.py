"""The IPVS connection table: both directions in one dict, TCP states, lazy expiry (ipvs.md §3).

Keys are the 12 bytes a packet carries: source+destination address, then source+destination
port, exactly as they sit in the IPv4 and L4 headers, so a lookup needs no parsing beyond two
slices. A connection is entered under its request key (client -> virtual) and, when replies
cross the director, under its reply key (real server -> client or local address).

Expiry never scans the table: every connection has one entry in a heap keyed by the time it was
last scheduled to expire; packets only move `expires` forward, and `expire()` re-queues entries
that were refreshed since.
"""

from __future__ import annotations

import heapq
import itertools
from typing import TYPE_CHECKING

from pylvs.engine import sctpstate, tcpstate
from pylvs.engine.flow import DIR_IN, DIR_OUT
from pylvs.ipvs_uapi import CONN_F_ASSURED, CONN_F_INACTIVE, CONN_F_TEMPLATE, PROTO_SCTP
from pylvs.packet.layout import PROTO_TCP, PROTO_UDP

if TYPE_CHECKING:
    from pylvs.engine.flow import FlowEntry
    from pylvs.engine.forward.base import Forwarder
    from pylvs.engine.services import RealServer, VirtualService

__all__ = ["DIR_IN", "DIR_OUT", "Conn", "ConnTable"]

UDP_TIMEOUT = 300
CONTROLLED_RETRY = 60  # a connection that still controls others retries expiry after 60 s


class Conn:
    """One tracked connection: `in_flow` and `out_flow` are its FlowEntry recipes (pylvs.engine.flow),
    bound once by its forwarder as ip_vs_bind_xmit binds `packet_xmit`; `slow` is per-connection state
    the recipe cannot hold (FULLNAT's client address delivery), None for most connections."""

    __slots__ = (
        "proto", "caddr", "cport", "vaddr", "vport", "daddr", "dport", "laddr", "lport",
        "svc", "dest", "forwarder", "in_flow", "out_flow", "slow", "state", "timeout", "expires", "flags",
        "in_key", "out_key", "control", "n_control", "dead", "in_pkts",
        "heap_at", "heap_seq", "local", "pe_data", "synproxy",
    )

    def __init__(self, proto: int, caddr: bytes, cport: bytes, vaddr: bytes, vport: bytes,
                 daddr: bytes, dport: bytes) -> None:
        self.proto = proto
        self.caddr, self.cport, self.vaddr, self.vport = caddr, cport, vaddr, vport
        self.daddr, self.dport = daddr, dport
        self.laddr = self.lport = b""
        self.svc: VirtualService | None = None
        self.dest: RealServer | None = None
        self.forwarder: Forwarder | None = None
        self.in_flow: FlowEntry | None = None
        self.out_flow: FlowEntry | None = None
        self.slow = None
        self.state = tcpstate.NONE
        self.timeout = tcpstate.INITIAL_TIMEOUT
        self.expires = 0.0
        self.flags = CONN_F_INACTIVE
        self.in_key = caddr + vaddr + cport + vport
        self.out_key = b""
        self.control: Conn | None = None
        self.n_control = 0
        self.dead = False
        self.in_pkts = 0
        self.heap_at = 0.0  # the time of this connection's live heap entry
        self.heap_seq = -1
        self.local = None  # FULLNAT: the LocalAddress the connection took its port from
        self.pe_data = b""  # a template's persistence-engine key (the SIP Call-ID)
        self.synproxy = None  # the SYN proxy's ProxiedConn (pylvs.engine.synproxy), for its services only

    @property
    def template(self) -> bool:
        return bool(self.flags & CONN_F_TEMPLATE)

    def state_name(self) -> str:
        if self.flags & CONN_F_TEMPLATE:
            return "ASSURED" if self.flags & CONN_F_ASSURED else "NONE"
        if self.proto == PROTO_UDP:
            return "UDP"
        if self.proto == PROTO_SCTP:
            return sctpstate.NAMES[self.state]
        return tcpstate.NAMES[self.state]


TemplateKey = tuple[int, bytes, bytes, bytes, int, bytes]


class ConnTable:
    """Connections of all protocols, indexed by (protocol, 12-byte key), with lazy timed expiry."""

    def __init__(self) -> None:
        self.by_proto: dict[int, dict[bytes, tuple[Conn, int]]] = {PROTO_TCP: {}, PROTO_UDP: {}, PROTO_SCTP: {}}
        # Persistence templates by (protocol, client network, VIP, vport or 0, fwmark, pe data).
        self.templates: dict[TemplateKey, Conn] = {}
        self.count = 0
        self._heap: list[tuple[float, int, Conn]] = []
        self._seq = itertools.count()

    def __len__(self) -> int:
        return self.count

    def lookup(self, proto: int, key: bytes) -> tuple[Conn, int] | None:
        """(connection, direction) for a packet's key. The engine's per-packet path reads `by_proto` itself."""
        tab = self.by_proto.get(proto)
        return tab.get(key) if tab is not None else None

    def in_use(self, proto: int, key: bytes) -> bool:
        tab = self.by_proto.get(proto)
        return tab is not None and key in tab

    def add_template(self, key: TemplateKey, tmpl: Conn, now: float) -> None:
        tmpl.in_key = key  # type: ignore[assignment] - a template is found under this tuple
        self.templates[key] = tmpl
        tmpl.expires = now + tmpl.timeout
        self._queue(tmpl)
        self.count += 1

    def add(self, conn: Conn, now: float) -> None:
        tab = self.by_proto.setdefault(conn.proto, {})
        tab[conn.in_key] = (conn, DIR_IN)
        if conn.out_key:
            tab[conn.out_key] = (conn, DIR_OUT)
        conn.expires = now + conn.timeout
        self._queue(conn)
        self.count += 1

    def _queue(self, conn: Conn) -> None:
        conn.heap_at = conn.expires
        conn.heap_seq = seq = next(self._seq)
        heapq.heappush(self._heap, (conn.expires, seq, conn))

    def refresh(self, conn: Conn, now: float) -> None:
        """Set the expiry from the current timeout; only a shortened one needs a new heap entry."""
        conn.expires = now + conn.timeout
        if conn.expires < conn.heap_at:
            self._queue(conn)

    def unlink(self, conn: Conn) -> None:
        if conn.dead:
            return
        conn.dead = True
        self.count -= 1
        if conn.flags & CONN_F_TEMPLATE:
            if self.templates.get(conn.in_key) is conn:  # type: ignore[call-overload]
                del self.templates[conn.in_key]  # type: ignore[arg-type]
            return
        tab = self.by_proto[conn.proto]
        if tab.get(conn.in_key, (None,))[0] is conn:
            del tab[conn.in_key]
        if conn.out_key and tab.get(conn.out_key, (None,))[0] is conn:
            del tab[conn.out_key]

    def due(self, now: float) -> list[Conn]:
        """Pop the connections whose time has come; re-queue those refreshed meanwhile."""
        heap = self._heap
        out: list[Conn] = []
        while heap and heap[0][0] <= now:
            _, seq, conn = heapq.heappop(heap)
            if conn.dead or seq != conn.heap_seq:
                continue  # expired already, or a stale entry superseded by an earlier one
            if conn.expires > now:
                self._queue(conn)
            elif conn.n_control:
                conn.expires = now + CONTROLLED_RETRY
                self._queue(conn)
            else:
                out.append(conn)
        return out

    def sample(self, k: int, rng) -> list[Conn]:
        """Up to `k` live entries picked at random (from the expiry heap: no scan of the table)."""
        heap = self._heap
        picked: dict[int, Conn] = {}
        for _ in range(min(k, len(heap))):
            conn = heap[rng.randrange(len(heap))][2]
            if not conn.dead:
                picked[id(conn)] = conn
        return list(picked.values())

    def conns(self) -> list[Conn]:
        seen: dict[int, Conn] = {id(t): t for t in self.templates.values()}
        for tab in self.by_proto.values():
            for conn, _ in tab.values():
                seen[id(conn)] = conn
        return list(seen.values())
