"""The backup's side of synchronisation: apply received messages to the engine (ip_vs_process_message,
ip_vs_proc_conn; ipvs.md §5).

Messages of another syncid are ignored unless ours is 0; a malformed message is dropped whole; a
connection this director cannot represent (IPv6, another protocol, an out-of-range state, data for a
persistence engine other than sip, an unknown mandatory option) is skipped on its own. Every drop is counted.
Adopted connections get the received state, flags and timeout, in_pkts = sync_threshold (so that as
a master this director resyncs them on the kernel's schedule) and the SYNC flag.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING

from pylvs.engine import pe_sip, sctpstate, tcpstate
from pylvs.ipvs_uapi import PROTO_SCTP
from pylvs.packet.layout import PROTO_TCP, PROTO_UDP
from pylvs.sync import proto

if TYPE_CHECKING:
    from pylvs.engine.engine import Engine

STATES = {PROTO_TCP: len(tcpstate.NAMES), PROTO_UDP: 1, PROTO_SCTP: sctpstate.LAST}  # IP_VS_*_S_LAST


class SyncBackup:
    def __init__(self, engine: Engine, syncid: int = 0, maxlen: int = 1472, threshold: int = 3) -> None:
        self.engine = engine
        self.syncid, self.maxlen, self.threshold = syncid, maxlen, threshold
        self.stats: Counter[str] = Counter()

    def receive(self, data: bytes, now: float) -> None:
        """One datagram from the sync group."""
        self.stats["messages"] += 1
        if len(data) > self.maxlen:
            self.stats["too_long"] += 1  # the kernel reads sync_maxlen bytes; the size check then fails
            return
        message = proto.decode(data)
        if isinstance(message, proto.Rejected):
            self.stats[f"rejected_{message.reason}"] += 1
            return
        if self.syncid and message.syncid != self.syncid:
            self.stats["other_syncid"] += 1
            return
        for conn in message.conns:
            self._apply(conn, now)

    def _apply(self, rec: proto.SyncConn, now: float) -> None:
        why = self._unusable(rec)
        if why:
            self.stats[why] += 1
            return
        rec.flags &= proto.BACKUP_MASK
        conn = self.engine.adopt(rec, now, in_pkts=self.threshold)
        if conn is None:
            self.stats["not_adopted"] += 1  # no such service or real server here, or a stale expiry
            return
        self.stats["conns"] += 1

    @staticmethod
    def _unusable(rec: proto.SyncConn) -> str:
        if rec.unknown_param:
            return "skipped_unknown_option"
        if rec.pe_data and rec.pe_name != pe_sip.NAME:
            return "skipped_persistence_engine"  # ip_vs_proc_conn: an engine this director does not have
        if rec.template:
            return ""
        states = STATES.get(rec.protocol)
        if states is None:
            return "skipped_protocol"
        return "skipped_state" if rec.state >= states else ""
