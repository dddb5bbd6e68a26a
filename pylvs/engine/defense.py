"""IPVS's defence against memory exhaustion (ip_vs_ctl.c update_defense_level, ip_vs_conn.c
ip_vs_random_dropentry, ip_vs_todrop; ipvs.md §3.10, §7), plus lvsd's hard cap on the connection table.

Each strategy has the sysctl's modes: 0 off, 1 automatic (becomes 2 while memory is short and back to
1 after), 3 always. "Available memory" is the kernel's free pages; lvsd has two honest measures of it
and takes the smaller: the host's MemAvailable (given by the I/O layer each tick, in pages) and, when
`--max-conns` is set, what is left of that budget at CONN_BYTES per entry (about what one connection
costs lvsd), in pages. So with the defaults (amemthresh 1024 pages = 4 MiB) the automatic modes start
when fewer than 4096 entries are left under the cap.

- drop_entry: every second, look at 1/32 of the table chosen at random and drop connections still in
  SYN_RECV/SYNACK, and some ESTABLISHED or UDP ones idle for 60 s with few packets (todrop_entry).
- drop_packet: drop one of every `rate` new-connection packets, rate = amemthresh / (amemthresh -
  available) in the automatic mode, am_droprate in mode 3.
- secure_tcp: the stricter TCP state table (tcp_states_dos): a client's ACK alone no longer makes a
  connection ESTABLISHED, so spoofed handshakes keep the short SYN timeouts.
- max_conns: no connection (or template) is created while the table holds that many; refusals are
  counted as the drop reason `max_conns`.
"""

from __future__ import annotations

import random
from collections import Counter
from typing import TYPE_CHECKING

from pylvs.engine import tcpstate
from pylvs.packet.layout import PROTO_TCP

if TYPE_CHECKING:
    from pylvs.engine.conntrack import Conn, ConnTable

PAGE = 4096
CONN_BYTES = 1024
UPDATE_PERIOD = 1.0  # DEFENSE_TIMER_PERIOD
IDLE_BEFORE_DROP = 60  # todrop_entry: an entry refreshed within the last 60 s is left alone
TODROP_RATE = (0, 1, 2, 3, 4, 5, 6, 7, 8)  # by the entry's incoming packets, 0..8


def _dos_table() -> tuple[tuple[int, ...], ...]:
    """tcp_states_dos: the normal table with the cells ipvs.md §3.3 lists changed."""
    rows = [list(row) for row in tcpstate.TRANSITIONS]
    syn, fin, ack, rst = 0, 1, 2, 3
    sr, sa = tcpstate.SYN_RECV, tcpstate.SYNACK
    inp, out, only = tcpstate.INPUT, tcpstate.OUTPUT, tcpstate.INPUT_ONLY
    rows[inp + syn][sa] = sa
    rows[inp + fin][sa] = sa
    rows[inp + ack][sr] = sr
    rows[inp + ack][sa] = sa
    rows[inp + rst][sa] = tcpstate.CLOSE
    rows[out + syn][sr] = sa
    rows[out + syn][sa] = sa
    for state in (tcpstate.NONE, tcpstate.FIN_WAIT, tcpstate.TIME_WAIT, tcpstate.CLOSE, tcpstate.CLOSE_WAIT,
                  tcpstate.LAST_ACK, tcpstate.LISTEN, sa):
        rows[only + syn][state] = sa
    return tuple(tuple(row) for row in rows)


DOS_TRANSITIONS = _dos_table()


def _mode(value: int, name: str) -> int:
    if value not in (0, 1, 2, 3):
        raise ValueError(f"{name} must be 0, 1, 2 or 3")
    return value


class Defense:
    """The strategies' current modes and effects; `update` once a second, as the kernel's defense work."""

    def __init__(self, amemthresh: int = 1024, drop_entry: int = 0, drop_packet: int = 0, secure_tcp: int = 0,
                 am_droprate: int = 10, max_conns: int = 0, seed: int | None = None) -> None:
        if amemthresh < 0 or am_droprate < 0 or max_conns < 0:
            raise ValueError("amemthresh, am_droprate and max_conns must not be negative")
        self.amemthresh, self.am_droprate, self.max_conns = amemthresh, am_droprate, max_conns
        # The sysctls' values: the automatic modes move between 1 and 2 as the kernel's do.
        self.drop_entry = _mode(drop_entry, "drop_entry")
        self.drop_packet = _mode(drop_packet, "drop_packet")
        self.secure_tcp = _mode(secure_tcp, "secure_tcp")
        self.dropping_entries = drop_entry == 3
        self.drop_rate = am_droprate if drop_packet == 3 else 0
        self._drop_counter = self.drop_rate
        self.transitions = DOS_TRANSITIONS if secure_tcp == 3 else tcpstate.TRANSITIONS
        self.available: int | None = None  # pages, as last measured
        self.counters: Counter[str] = Counter()  # dropped_entries
        self._todrop = [0] * len(TODROP_RATE)
        self._rng = random.Random(seed)
        self._next_update = 0.0

    def due(self, now: float) -> bool:
        """Once a second, as the kernel's defense work."""
        if now < self._next_update:
            return False
        self._next_update = now + UPDATE_PERIOD
        return True

    def full(self, entries: int) -> bool:
        """The hard cap: no new entry once the table holds max_conns."""
        return bool(self.max_conns) and entries >= self.max_conns

    def measure(self, entries: int, host_pages: int | None) -> int | None:
        """Available memory in pages: the smaller of the host's and what the --max-conns budget leaves."""
        measures = [] if host_pages is None else [host_pages]
        if self.max_conns:
            measures.append(max(self.max_conns - entries, 0) * CONN_BYTES // PAGE)
        return min(measures) if measures else None

    def update(self, entries: int, host_pages: int | None) -> None:
        """update_defense_level: switch the automatic modes by the available memory."""
        self.available = avail = self.measure(entries, host_pages)
        nomem = avail is not None and avail < self.amemthresh
        if self.drop_entry in (1, 2):
            self.dropping_entries = nomem
            self.drop_entry = 2 if nomem else 1
        else:
            self.dropping_entries = self.drop_entry == 3
        if self.drop_packet in (1, 2):
            if nomem:
                self.drop_rate = self._drop_counter = self.amemthresh // (self.amemthresh - avail)
            else:
                self.drop_rate = 0
            self.drop_packet = 2 if nomem else 1
        else:
            self.drop_rate = self.am_droprate if self.drop_packet == 3 else 0
        if self.secure_tcp in (1, 2):
            self.secure_tcp = 2 if nomem else 1
        self.transitions = DOS_TRANSITIONS if self.secure_tcp >= 2 else tcpstate.TRANSITIONS

    def next_state(self, state: int, offset: int, flags: int) -> int:
        """tcpstate.next_state in the table the secure_tcp mode selects."""
        idx = tcpstate.event(flags)
        return tcpstate.CLOSE if idx < 0 else self.transitions[offset + idx][state]

    def todrop(self) -> bool:
        """ip_vs_todrop: whether this new-connection packet is the one in `drop_rate` to drop."""
        if not self.drop_rate:
            return False
        self._drop_counter -= 1
        if self._drop_counter > 0:
            return False
        self._drop_counter = self.drop_rate
        return True

    def entries_to_drop(self, table: ConnTable, now: float) -> list[Conn]:
        """ip_vs_random_dropentry: 1/32 of the table at random, the entries a flood leaves behind."""
        if not self.dropping_entries:
            return []
        chosen = []
        for conn in table.sample(max(len(table) >> 5, 1), self._rng):
            if conn.template or conn.n_control:
                continue
            if conn.proto != PROTO_TCP or conn.state == tcpstate.ESTABLISHED:
                drop = self._todrop_entry(conn, now)  # idle, few packets: rationed by todrop_rate
            else:
                drop = conn.state in (tcpstate.SYN_RECV, tcpstate.SYNACK)  # half-open: always
            if drop:
                chosen.append(conn)
        self.counters["dropped_entries"] += len(chosen)
        return chosen

    def _todrop_entry(self, conn: Conn, now: float) -> bool:
        if now - (conn.expires - conn.timeout) < IDLE_BEFORE_DROP:
            return False
        i = conn.in_pkts
        if not 0 <= i < len(TODROP_RATE) or not TODROP_RATE[i]:
            return False
        self._todrop[i] -= 1
        if self._todrop[i] > 0:
            return False
        self._todrop[i] = TODROP_RATE[i]
        return True
