"""What the engine tells the world: typed events, pulled by as many consumers as want them.

Nothing in the engine calls out. A consumer (the director's reconciliation of steering and ARP, the
sync master, a fast-path map writer, metrics) subscribes once and then pulls with `next_event()`,
as h11 and aioquic hand out their events; each subscription has its own queue, so consumers are
independent and none can miss what another one took.

Service table changes are coalesced: a subscription holds at most one pending ServicesChanged, carrying
the latest generation, so a batch of N operations is reconciled once.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pylvs.engine.conntrack import Conn


class ConnEventKind(enum.IntEnum):
    CREATED = 0   # a new connection (scheduled, or adopted from sync)
    STATE = 1     # TCP state changed; `value` is the new state
    FLOWS = 2     # a FlowEntry of the connection changed (e.g. FULLNAT's client address was delivered)
    EXPIRED = 3   # its timeout ran out
    REMOVED = 4   # taken out otherwise (reused by a new SYN, real server gone, replaced by sync)
    COUNTED = 5   # client -> server packets were counted: in_pkts went from `since` to `value` (packet level)


class ConnEvent:
    """Something happened to a connection; `conn.in_flow`/`conn.out_flow` are its FlowEntry recipes."""

    __slots__ = ("kind", "conn", "value", "since")

    def __init__(self, kind: ConnEventKind, conn: Conn, value: int = 0, since: int = -1) -> None:
        self.kind = kind
        self.conn = conn
        self.value = value
        # COUNTED: the count before; one packet (value - 1) unless a second data path forwarded several
        self.since = value - 1 if since < 0 else since

    @property
    def flows(self) -> tuple:
        conn = self.conn
        return tuple(f for f in (conn.in_flow, conn.out_flow) if f is not None)

    def __repr__(self) -> str:
        return f"ConnEvent({self.kind.name}, {self.conn.in_key.hex()}, {self.value})"


class ServicesChanged:
    """The service table or what the director owns changed; `generation` only ever grows."""

    __slots__ = ("generation",)

    def __init__(self, generation: int) -> None:
        self.generation = generation

    def __repr__(self) -> str:
        return f"ServicesChanged({self.generation})"


Event = ConnEvent | ServicesChanged


class Subscription:
    """One consumer's queue. `services`: ServicesChanged; `conns`: connection events; `packets`: also
    one COUNTED per client -> server packet."""

    def __init__(self, refresh: Callable[[], None], services: bool, conns: bool, packets: bool) -> None:
        self._refresh = refresh
        self.services = services
        self.conns = conns
        self.packets = packets
        self.queue: deque[Event] = deque()
        self._pending: ServicesChanged | None = None  # the one ServicesChanged still queued

    def next_event(self) -> Event | None:
        """The oldest pending event, or None when there is none."""
        self._refresh()
        if not self.queue:
            return None
        event = self.queue.popleft()
        if event is self._pending:
            self._pending = None
        return event

    def __iter__(self) -> Iterator[Event]:
        """Drain: every pending event, oldest first."""
        while (event := self.next_event()) is not None:
            yield event

    def services_changed(self, generation: int) -> None:
        if self._pending is not None:
            self._pending.generation = generation  # coalesced: one reconciliation per batch
            return
        self._pending = event = ServicesChanged(generation)
        self.queue.append(event)
