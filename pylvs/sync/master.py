"""The master's side of synchronisation: what to send and when (ip_vs_sync_conn_needed; ipvs.md §5).

The master follows the engine's connection events (a packet-level subscription, pylvs.engine.events):
`handle(event)` for each, `follow(subscription)` to drain one. COUNTED comes after the engine counted a
client -> server packet, STATE after a TCP state change. The policy is the kernel's with its defaults:
  * TCP is sent only in ESTABLISHED, FIN_WAIT, CLOSE, CLOSE_WAIT and TIME_WAIT; UDP always qualifies;
  * a change to one of those states other than ESTABLISHED is sent at once;
  * otherwise a connection is sent when in_pkts % sync_period == sync_threshold ("3 50");
  * the template controlling a connection is sent along each time the connection's packet is counted;
  * messages hold at most sync_maxlen bytes (and 255 connections) and leave when full or 2 s old.
Two differences, both invisible to a backup: a state change seen on a reply is sent when it happens
(the kernel waits for the client's next packet), and a connection already waiting in the unsent
message has its entry rewritten in place instead of being appended twice.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING

from pylvs.engine import sctpstate, tcpstate
from pylvs.engine.events import ConnEvent, ConnEventKind
from pylvs.engine.services import Method
from pylvs.ipvs_uapi import CONN_F_ASSURED, CONN_F_INACTIVE, CONN_F_NOOUTPUT, CONN_F_SYNC, CONN_F_TEMPLATE, PROTO_SCTP
from pylvs.packet.layout import PROTO_TCP
from pylvs.sync import proto
from pylvs.sync.config import SyncSettings

if TYPE_CHECKING:
    from pylvs.engine.conntrack import Conn
    from pylvs.engine.events import Subscription

FLUSH_SECONDS = 2.0  # IPVS_SYNC_FLUSH_TIME
MAX_CONNS = 255      # nr_conns is one byte
TCP_SYNCED = frozenset({tcpstate.ESTABLISHED, tcpstate.FIN_WAIT, tcpstate.CLOSE, tcpstate.CLOSE_WAIT,
                        tcpstate.TIME_WAIT})
SCTP_SYNCED = frozenset({sctpstate.ESTABLISHED, sctpstate.SHUTDOWN_SENT, sctpstate.SHUTDOWN_RECEIVED,
                         sctpstate.SHUTDOWN_ACK_SENT, sctpstate.CLOSED})
# By protocol: the states a connection is sent in, and those sent at once when entered (UDP: any, by count).
SYNCED = {PROTO_TCP: TCP_SYNCED, PROTO_SCTP: SCTP_SYNCED}
AT_ONCE = {PROTO_TCP: TCP_SYNCED - {tcpstate.ESTABLISHED}, PROTO_SCTP: SCTP_SYNCED - {sctpstate.ESTABLISHED}}


class SyncMaster:
    """Builds sync messages; `send` gets each finished message (the I/O layer multicasts it)."""

    def __init__(self, send: Callable[[bytes], None], syncid: int = 0, maxlen: int = 1472,
                 settings: SyncSettings | None = None) -> None:
        settings = settings or SyncSettings()
        self.send = send
        self.syncid, self.maxlen = syncid, maxlen
        self.version, self.threshold, self.period = settings.version, settings.threshold, settings.period
        self.stats: Counter[str] = Counter()
        self._header = proto.header_size(self.version)
        self._body = bytearray()
        self._slots: dict[Conn, int] = {}  # where each waiting connection's entry starts in _body
        self._waiting_since: float | None = None

    # -- the engine's events --------------------------------------------------------------------

    def follow(self, events: Subscription) -> None:
        """Handle every pending event of the engine subscription (conns and packets) this master reads."""
        for event in events:
            if isinstance(event, ConnEvent):
                self.handle(event)

    def handle(self, event: ConnEvent) -> None:
        conn = event.conn
        if conn.dead:
            return  # gone before its news was read: the backup expires it by its own timeout
        if event.kind == ConnEventKind.STATE:
            if event.value in AT_ONCE.get(conn.proto, ()):
                self.add(conn)
        elif event.kind == ConnEventKind.COUNTED:
            due = any(self._due(pkts) for pkts in range(event.since + 1, event.value + 1))
            synced = SYNCED.get(conn.proto)
            if (synced is None or conn.state in synced) and due:
                self.add(conn)
            if conn.control is not None:
                self.add(conn.control)

    def _due(self, pkts: int) -> bool:
        # sync_period 0: only once, when the count reaches the threshold
        return pkts % self.period == self.threshold if self.period else pkts == self.threshold

    # -- messages -------------------------------------------------------------------------------

    def add(self, conn: Conn) -> None:
        """Put a connection's current state into the unsent message."""
        if conn.dest.method == Method.FULLNAT:
            self.stats["skipped_fullnat"] += 1  # its local address and port have no place in the message
            return
        if conn.synproxy is not None:
            self.stats["skipped_synproxy"] += 1  # nor have the SYN proxy's sequence deltas
            return
        if self.version == 0 and len(conn.caddr) == 16:
            self.stats["skipped_ipv6_v0"] += 1  # version 0 has no IPv6 layout (the kernel sends v1 for IPv6)
            return
        entry = self._entry(conn)
        slot = self._slots.get(conn)
        if slot is not None:
            self._body[slot:slot + len(entry)] = entry
            return
        if self._slots and (self._header + len(self._body) + len(entry) > self.maxlen
                            or len(self._slots) >= MAX_CONNS):
            self.flush()
        self._slots[conn] = len(self._body)
        self._body += entry  # entries are padded to 32 bits (v1: 36 or 72 (IPv6) bytes and options; v0: 24)

    def _entry(self, conn: Conn) -> bytes:
        method = int(conn.dest.method)
        if conn.flags & CONN_F_TEMPLATE:
            # A template carries its real server's connection flags, as the kernel binds it.
            flags = CONN_F_TEMPLATE | CONN_F_INACTIVE | method | (0 if method == Method.MASQ else CONN_F_NOOUTPUT)
            state = proto.TEMPLATE_ASSURED if conn.flags & CONN_F_ASSURED else proto.TEMPLATE_NONE
        else:
            flags = conn.flags & (CONN_F_NOOUTPUT | CONN_F_INACTIVE | CONN_F_SYNC) | method
            state = conn.state
        if self.version == 0:
            return proto.pack_v0(conn.proto, flags, state, conn.cport, conn.vport, conn.dport,
                                 conn.caddr, conn.vaddr, conn.daddr)
        return proto.pack_v1(conn.proto, flags, state, conn.cport, conn.vport, conn.dport, conn.svc.fwmark,
                             int(conn.timeout), conn.caddr, conn.vaddr, conn.daddr,
                             conn.svc.pe.encode(), conn.pe_data)

    def flush(self) -> None:
        if not self._slots:
            return
        message = proto.header(self.version, self.syncid, len(self._slots), self._header + len(self._body))
        message += self._body
        self.stats["messages"] += 1
        self.stats["conns"] += len(self._slots)
        self._body = bytearray()
        self._slots = {}
        self._waiting_since = None
        self.send(message)

    def tick(self, now: float) -> None:
        """Call about once a second: an unsent message leaves when it has waited 2 s."""
        if not self._slots:
            return
        if self._waiting_since is None:
            self._waiting_since = now
        elif now - self._waiting_since >= FLUSH_SECONDS:
            self.flush()
