"""The connection table across an lvsd restart, kept in the sync protocol's own messages.

A graceful stop (SIGTERM) writes every connection and persistence template as the master daemon
would send them (pylvs.sync.master); the next start reads them back as a backup daemon adopts them
(pylvs.sync.backup, `Engine.adopt`): each is bound again to this director's service and real server,
with its state, and lives on from its state's full timeout. So an established connection survives
a restart: its packets of the seconds in between are retransmitted by its ends. What the sync
protocol cannot carry is not kept either: FULLNAT connections (their local address and port) and
IPv6 ones.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING

from pylvs.sync.backup import SyncBackup
from pylvs.sync.master import SyncMaster

if TYPE_CHECKING:
    from pylvs.engine.engine import Engine

MAGIC = b"pylvs connections 1\n"
MAX_MESSAGE = 65000  # well inside the 16-bit size field of a version 1 message
_LENGTH = struct.Struct("!I")


class SnapshotError(ValueError):
    pass


def dump(engine: Engine) -> bytes:
    messages: list[bytes] = []
    master = SyncMaster(messages.append, syncid=0, maxlen=MAX_MESSAGE)
    for conn in engine.conns.conns():
        master.add(conn)
    master.flush()
    return MAGIC + b"".join(_LENGTH.pack(len(m)) + m for m in messages)


def load(engine: Engine, data: bytes, now: float) -> int:
    """Adopt the connections of a snapshot; how many were adopted."""
    if not data.startswith(MAGIC):
        raise SnapshotError("not a pylvs connection snapshot")
    backup = SyncBackup(engine, syncid=0, maxlen=MAX_MESSAGE)
    offset = len(MAGIC)
    while offset < len(data):
        if offset + _LENGTH.size > len(data):
            raise SnapshotError("truncated snapshot")
        (size,) = _LENGTH.unpack_from(data, offset)
        offset += _LENGTH.size
        if offset + size > len(data):
            raise SnapshotError("truncated snapshot")
        backup.receive(data[offset:offset + size], now)
        offset += size
    return backup.stats["conns"]
