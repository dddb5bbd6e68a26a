"""Keep the kernel fast path's flow map in step with the engine: one more consumer of its events.

The engine stays the authority (docs/design.md, "The engine's contract"). This consumer writes a
connection's FlowEntry recipes into the map when the kernel may execute them and deletes them when
it may not:
- TCP: from the SYN the engine scheduled (CREATED, in SYN_RECV, before the SYN leaves; at most
  capacity / EMBRYONIC_SHARE such connections at once, others from ESTABLISHED) until expiry or
  removal, through the handshake, FIN_WAIT, CLOSE_WAIT and LAST_ACK: the program forwards the
  SYN+ACK, FIN, RST and the ACKs of a closing connection itself and reports each state change it
  makes on its event ring; `apply()` hands them to the engine in
  that order (`Engine.tcp_transition`). The program itself takes the recipes out with the segment
  that ends the connection (the ACK after TIME_WAIT, a RST; where replies do not cross the director,
  DR and TUN, the FIN that makes FIN_WAIT: two minutes of idle recipes would only cost refreshes) and
  reports their last counts (RETIRED): a short connection costs no map deletions here. Where that
  segment does not come within a tick, they are withdrawn here. Also at any state change the engine
  made itself (a segment the program punted; a handshake segment it forwarded before the recipes were
  written rewrites them in the new state) or one where the engine's state table and the
  kernel's disagree: from then on the engine sees every packet again. SYN is punted (scheduling,
  connection reuse), but for services the program schedules itself (pylvs.datapath.bpf.ksched): their
  connections are adopted from CREATED events with the entries the program made (`_adopt`).
  Written at once because a short connection (Connection: close) lives well under a tick: its
  response and FIN must not wait for Python behind each other (issue 19);
- UDP: from creation until expiry or removal, written OFFLOAD_DELAY after the event (or on the next
  tick, whichever comes first), so a single request and answer costs no map writes, reads or deletes;
- a recipe marked engine-only (the PROXY protocol before its header is sent, FULLNAT TOA over IPv6) waits
  for its FLOWS event, which also rewrites one the kernel holds marked F_TOA (IPv4 FULLNAT: the program
  inserts TOA itself) after the engine inserted it; one whose next hop is still being resolved waits for
  the next refresh;
- tunnel recipes too: the program keeps CHECKSUM_PARTIAL and GSO frames whole
  inside the tunnel. A kernel decapsulates them as such, and so does `lvs-rs`'s userspace
  decapsulator (it reads their offload state and hands it to its TUN device); a decapsulator that
  reads the inner packet from a raw socket without that state would see unfinished checksums.
Each direction's recipe goes to the kernel at once if no frame of that direction waits for the engine
on the interface its packets arrive on (where the other direction leaves; the ring's waiting frames are
looked at), else at the end of a round that drained that interface, or at the second tick after it
was due: a packet of that direction
still queued for the engine when its recipe is written would be overtaken by the next one, which the
kernel forwards at once (a server's ACK passed by its response reaches a client already in
TIME_WAIT, whose answer draws a RST from the server).
What the kernel counted comes back with `refresh(now)`: a share of the offloaded connections per call,
so each is read at least every REFRESH_SECONDS (well inside the shortest timeout an offloaded state
has; all of them on every call while there are few), before its entry is deleted, and before lvsadm
lists or zeroes statistics and connections (`refresh_all`). The engine turns the counts into statistics, expiry and
sync (`Engine.account`).
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

from pylvs.datapath.bpf.adopt import resolve_hops
from pylvs.datapath.bpf.events import FlowEvent, RetiredEvent, SchedEvent
from pylvs.datapath.bpf.flowsize import DEFAULT_FLOW_ENTRIES
from pylvs.datapath.bpf.libbpf import BpfError
from pylvs.datapath.bpf.maps import counts
from pylvs.engine import tcpstate
from pylvs.engine.events import ConnEvent, ConnEventKind
from pylvs.engine.flow import DIR_OUT, F_ENGINE_ONLY, KEY, VALUE, VALUE_FIELDS, addr16
from pylvs.ipvs_uapi import AF_INET, AF_INET6, CONN_F_NOOUTPUT, CONN_F_TEMPLATE, PROTO_TCP, PROTO_UDP, Method

if TYPE_CHECKING:
    from pylvs.datapath.bpf.ksched import KernelScheduler
    from pylvs.datapath.bpf.maps import FlowMap
    from pylvs.engine.conntrack import Conn
    from pylvs.engine.engine import Engine
    from pylvs.engine.flow import FlowEntry
    from pylvs.engine.hops import Hop

log = logging.getLogger(__name__)

REFRESH_SECONDS = 2.0  # the rate estimator's period: --stats and --rate see kernel-forwarded packets
OFFLOAD_DELAY = 0.05    # seconds a UDP connection waits in the engine before its recipes go to the kernel
KERNEL_DONE = frozenset({tcpstate.TIME_WAIT, tcpstate.CLOSE})  # kernel-made states that end the offload
EMBRYONIC_SHARE = 16     # at most capacity / 16 connections with recipes written at their SYN (2 entries each)
FULL_REFRESH = 5000    # up to this many offloaded connections, every refresh reads them all (~2 µs each)
TCP_STATE = next(i for i, (name, _, _) in enumerate(VALUE_FIELDS) if name == "tcp_state")
_KERNEL_WRITTEN = {"tcp_state", "tcp_flags", "transitions", "packets", "bytes", "last_seen_ns"}
_RECIPE = [i for i, (name, _, _) in enumerate(VALUE_FIELDS) if name not in _KERNEL_WRITTEN]


def _placeholder() -> bytes:
    """The value that claims a FULLNAT reply key for a connection whose own reply recipe is not in the map:
    engine-only, so a reply that hits it goes to the engine."""
    fields = {"method": int(Method.FULLNAT), "direction": DIR_OUT, "flags": F_ENGINE_ONLY}
    return VALUE.pack(*(fields.get(name, b"" if code.endswith("s") else 0) for name, code, _ in VALUE_FIELDS))


PLACEHOLDER = _placeholder()


def _recipe(raw: bytes) -> list:
    """The fields of a packed value the engine decides (not those the kernel writes as it forwards)."""
    value = VALUE.unpack(raw)
    return [value[i] for i in _RECIPE]


def pack_key(proto: int, key: bytes) -> bytes:
    """The flow map's key for a connection key (saddr, daddr, sport, dport; 12 bytes IPv4, 36 IPv6)."""
    n = (len(key) - 4) // 2
    return KEY.pack(AF_INET if n == 4 else AF_INET6, proto, 0, addr16(key[:n]), addr16(key[n:2 * n]),
                    key[2 * n:2 * n + 2], key[2 * n + 2:2 * n + 4])


def _round_for(conn: Conn, ifindex: int, family: int) -> int:
    """A round of `ifindex`'s ring for `family`, as `conn` sees it: its own family's ring, or other work (0)."""
    return ifindex if (AF_INET6 if len(conn.caddr) == 16 else AF_INET) == family else 0


class FlowOffload:
    def __init__(self, engine: Engine, flows: FlowMap, busy: Callable[[int, bytes], bool] | None = None,
                 capacity: int = DEFAULT_FLOW_ENTRIES) -> None:
        self.engine = engine
        self.flows = flows
        # busy(ifindex, key): a frame of the flow `key` (as it arrives) waits for the engine on that
        # interface (None: assume one may)
        self.busy = busy
        self.events = engine.subscribe(services=False, conns=True)
        # Connections with recipes in the map. What of an entry's counts the engine has been told is in the
        # FlowEntry's own packets and bytes (read back, then told at once): no other copy per connection.
        self._offloaded: dict[Conn, tuple[FlowEntry, ...]] = {}
        # Offloadable: due at a time (OFFLOAD_DELAY after the event, in time order), or waiting for a hop.
        self._due: deque[tuple[float, Conn]] = deque()
        self._pending: set[Conn] = set()
        self._waiting: set[Conn] = set()
        # Recipes due but not written: by the interface their packets arrive on (see the module's text);
        # `_stale` holds those already deferred at the last tick, which the next tick writes regardless.
        self._later: dict[int, set[Conn]] = {}
        self._stale: set[Conn] = set()
        self._cursor: list[Conn] = []
        # Ended in the kernel (TIME_WAIT, CLOSE), waiting for the program to retire their entries: those
        # of the last tick (`_retire_late`) are withdrawn at the next.
        self._retiring: set[Conn] = set()
        self._retire_late: set[Conn] = set()
        # TCP connections the engine scheduled whose recipes went to the kernel with their SYN and that are
        # still in SYN_RECV: at most `_embryonic_max`, so a SYN flood cannot push established flows out
        # of the map (beyond it, recipes wait for ESTABLISHED).
        self._embryonic: set[Conn] = set()
        self._embryonic_max = capacity // EMBRYONIC_SHARE
        self.retired = 0
        self.errors = 0
        self.mismatches = 0  # kernel reports whose new state the engine's table did not reach
        # Kernel scheduling (pylvs.datapath.bpf.ksched), when on: published with the service table and
        # every tick; its CREATED events are adopted in `apply`.
        self.ksched: KernelScheduler | None = None
        self.adopted = 0
        self.refused = 0  # CREATED events the engine did not adopt: their entries withdrawn
        self.rerouted = 0  # adopted, but the engine routes the replies elsewhere: entries withdrawn
        # FULLNAT TCP connections by the packed reply key they hold in the map (their reply recipe, or
        # PLACEHOLDER while it is not written): the program, which takes local ports from the same
        # ranges, creates its reply entries only where no key is (FullNat.claim).
        self._claims: dict[Conn, bytes] = {}
        for fnat in engine.fullnat_forwarders():
            fnat.claim = self._claim

    def __len__(self) -> int:
        return len(self._offloaded)

    # -- events ----------------------------------------------------------------------------

    def drain(self, now: float, ifindex: int = 0, family: int = AF_INET) -> None:
        """Act on every pending connection event, and offload what is due (after each round of the loop;
        `ifindex`: the interface whose frames the round drained, 0 after other work; `family`: its ring's,
        as IPv4 and IPv6 frames of an interface wait in rings of their own, so a round of one says
        nothing of the other's: for connections of the other family it counts as other work)."""
        for event in self.events:
            if isinstance(event, ConnEvent) and not event.conn.flags & CONN_F_TEMPLATE:
                self._handle(event, now, _round_for(event.conn, ifindex, family))
        while self._due and self._due[0][0] <= now:
            conn = self._due.popleft()[1]
            self._promote(conn, _round_for(conn, ifindex, family))
        if ifindex and ifindex in self._later:
            for conn in self._later.pop(ifindex):
                self._offload(conn, _round_for(conn, ifindex, family))

    def _promote(self, conn: Conn, ifindex: int) -> None:
        if conn in self._pending:
            self._pending.discard(conn)
            self._offload(conn, ifindex)

    def _schedule(self, conn: Conn, now: float) -> None:
        if conn not in self._pending:
            self._pending.add(conn)
            self._due.append((now + OFFLOAD_DELAY, conn))

    def _handle(self, event: ConnEvent, now: float, ifindex: int) -> None:
        conn, kind = event.conn, event.kind
        if kind in (ConnEventKind.EXPIRED, ConnEventKind.REMOVED):
            claimed = self._claims.pop(conn, None)
            if claimed is not None and not self._holds_reply(conn):
                self._delete_key(claimed)  # the placeholder (a reply recipe goes with the withdrawal)
            self._withdraw(conn)
        elif kind == ConnEventKind.CREATED:
            if conn.proto == PROTO_UDP:
                self._schedule(conn, now)
            elif conn.state == tcpstate.SYN_RECV and len(self._embryonic) < self._embryonic_max \
                    and not conn.svc.synproxy:
                self._offload_syn(conn, ifindex)
        elif kind == ConnEventKind.STATE:  # the engine's own change (the kernel's are applied in `apply`)
            if conn in self._embryonic:
                if event.value == tcpstate.SYN_RECV:
                    return  # the SYN's own change: the recipes went to the kernel in that state
                self._withdraw(conn)  # a segment the engine forwarded moved it on: the kernel's copy is behind
            if event.value == tcpstate.ESTABLISHED and conn.state == tcpstate.ESTABLISHED:
                self._offload(conn, ifindex)
            else:
                self._withdraw(conn)
        elif kind == ConnEventKind.FLOWS:  # a recipe that was engine-only may go to the kernel now
            if conn.proto == PROTO_UDP:
                self._schedule(conn, now)
            elif conn.state == tcpstate.ESTABLISHED:
                if any(f is conn.in_flow for f in self._offloaded.get(conn, ())):
                    self._withdraw(conn)  # the kernel holds it marked F_TOA: the engine sent TOA, the mark goes
                self._offload(conn, ifindex)

    def apply(self, events: list[FlowEvent | SchedEvent | RetiredEvent]) -> None:
        """The kernel's TCP state changes, in the order it made them: the engine makes them too (and does
        not queue them back to this consumer: what they mean for the recipes is decided here).

        Where the engine's table ends elsewhere than the kernel's (two CPUs changing the same
        connection at once), the recipes are withdrawn and the engine decides alone from then on.
        A kernel-made TIME_WAIT or CLOSE keeps the recipes until the program retires them (or a tick
        later, `refresh`); so does a kernel-made FIN_WAIT without replies seen (DR, TUN), which the
        program retires with the FIN itself (with no room on the ring for that, they are withdrawn
        here a tick later, as the engine's own FIN_WAIT withdraws them at once)."""
        if self.ksched is not None:
            self.ksched.drain()  # a change of the service table published now, not at the next tick
        transition, origin = self.engine.tcp_transition, self.events
        cursors: dict[tuple[int, int], int] = {}  # rr, wrr: the furthest choice the kernel took, by (slot, gen)
        for ev in events:
            kind = type(ev)
            if kind is SchedEvent:
                if self._adopt(ev) and cursors.get((ev.slot, ev.gen), -1) < ev.cursor:
                    cursors[ev.slot, ev.gen] = ev.cursor
            elif kind is RetiredEvent:
                self._retired(ev)
            else:
                found = transition(ev.key, ev.tcp_flags, ev.ts_ns / 1e9, origin)
                if found is None:
                    continue  # gone meanwhile (expired, removed): nothing to apply
                conn, before = found
                state = conn.state
                if before == tcpstate.SYN_RECV:
                    self._embryonic.discard(conn)
                if state != ev.new_state:
                    self.mismatches += 1
                    self._withdraw(conn)
                elif state != before and conn in self._offloaded and (
                        state in KERNEL_DONE or state == tcpstate.FIN_WAIT and conn.flags & CONN_F_NOOUTPUT):
                    self._retiring.add(conn)  # the program retires the entries with this or the last segment
        for (slot, gen), cursor in cursors.items():  # (once a batch: the engine schedules nothing meanwhile)
            self.ksched.follow(slot, gen, cursor)  # the engine's scheduler continues after the kernel's picks

    def _adopt(self, ev: SchedEvent) -> bool:
        """A connection the program scheduled and created: the engine makes it, and its entries, already in
        the map, are offloaded from the start (the SYN's state change, made with them, is a kernel-made one).
        Whether the event named a published destination (its rr/wrr cursor is then followed)."""
        found = self.ksched.resolve(ev.slot, ev.gen, ev.dest) if self.ksched is not None else None
        local = (ev.laddr, ev.lport) if ev.laddr else None  # FULLNAT: where the program bound it
        conn = (self.engine.adopt_kernel(*found, ev.key, ev.ts_ns / 1e9, self.events, local)
                if found is not None else None)
        if conn is None:
            self.refused += 1
            k, n = ev.key, len(ev.raddr)
            to, to_port = local or (k[:n], k[2 * n:2 * n + 2])  # the reply entry's: the local or the client's
            for key in (k, ev.raddr + to + ev.rport + to_port):  # the SYN's entry, the reply entry (NAT, FULLNAT)
                self._delete_key(pack_key(PROTO_TCP, key))
            return found is not None
        self.adopted += 1
        if conn.local is not None:
            self._claims[conn] = pack_key(PROTO_TCP, conn.out_key)  # the program's reply entry claimed it
        flows = tuple(f for f in (conn.in_flow, conn.out_flow) if f is not None)
        for f in flows:
            f.packets = f.bytes = 0  # the counts told: none yet
        self._offloaded[conn] = flows
        resolve_hops(self.engine, conn)  # as the recipes the program copied: a MAC that moves rewrites them
        if conn.out_flow is not None:
            # The program sends NAT's replies back where the SYN came from; where the engine's routes
            # say otherwise, its recipes go and the engine decides alone. Where they do not know yet
            # (a client whose MAC only the kernel has seen: every packet of its connections so far went
            # through the kernel), the program's choice stands: withdrawn, the connection would stay
            # in Python for good; the engine's hop follows when its lookup resolves.
            hop = conn.out_flow.hop  # (resolve_hops: the engine's route back to the client)
            if hop is not None and (hop.ifindex != ev.ifindex or hop.eth[:6] != ev.hw):
                self.rerouted += 1
                self._withdraw(conn)
        return True

    def _retired(self, ev: RetiredEvent) -> None:
        """The program took a connection's entries out with the segment that ended it: their last counts
        are told and nothing is left to withdraw."""
        hit = self.engine.conns.lookup(ev.proto, ev.key)
        if hit is None:
            return  # gone meanwhile: withdrawn at removal, where the entries were already missing
        conn = hit[0]
        self.retired += 1
        self._claims.pop(conn, None)  # the key went with the entries (the connection ends in the engine's table)
        self._retiring.discard(conn)
        self._retire_late.discard(conn)
        # Not offloaded: withdrawn while the program retired the entries, its reads found nothing and left
        # the counts told in the FlowEntries, which the counts here follow on from.
        flows = self._offloaded.pop(conn, None) or (conn.in_flow, conn.out_flow)
        for f in flows:
            if f is not None and ev.deleted >> f.direction & 1:
                packets, nbytes = f.packets, f.bytes
                f.packets, f.bytes, f.last_seen_ns = ev.counts[f.direction]
                self._account(conn, f, True, packets, nbytes)

    def _offload_syn(self, conn: Conn, ifindex: int) -> None:
        """A TCP connection the engine has just scheduled: its recipes go to the kernel with the SYN, so
        the kernel forwards its SYN+ACK, handshake, data and close as for a connection it scheduled
        itself (pylvs_sched.bpf.h). Written later (ESTABLISHED), the server's response and FIN could
        still wait for Python while the kernel forwarded the client's next segments: the two state
        tables then disagree and the connection is withdrawn to Python for good. NAT's reply recipe
        needs the next hop towards the client now, not when the first reply crosses the engine."""
        out = conn.out_flow
        if out is not None and out.hop is None and conn.forwarder is not None:
            conn.forwarder.hop(out, conn.caddr)
        self._offload(conn, ifindex)
        if conn in self._offloaded:
            self._embryonic.add(conn)

    def _offload(self, conn: Conn, ifindex: int) -> None:
        """Write the connection's recipes that may go to the kernel after a round of `ifindex` (0: none,
        -1: regardless of rounds); one still without a hop waits, one arriving elsewhere is deferred."""
        if conn.dead:
            return
        written = list(self._offloaded.get(conn, ()))
        done = {id(f) for f in written}
        waiting = False
        flows = (conn.in_flow, conn.out_flow)
        for i, f in enumerate(flows):
            if f is None or f.flags & F_ENGINE_ONLY or id(f) in done:
                continue
            if f.hop is None:
                waiting = True  # resolved by the first packet that direction sends through the engine
                continue
            other = flows[1 - i]
            arrival = other.hop.ifindex if other is not None and other.hop is not None else 0
            if arrival and arrival != ifindex and ifindex >= 0 and (self.busy is None or self.busy(arrival, f.key)):
                self._later.setdefault(arrival, set()).add(conn)
                continue
            f.packets = f.bytes = f.last_seen_ns = 0
            f.tcp_state = conn.state if conn.proto != PROTO_UDP else 0
            try:
                self.flows.put(f)
            except BpfError as exc:
                self._error("writing", exc)
                continue
            written.append(f)
        if written:
            self._offloaded[conn] = tuple(written)
        if waiting:
            self._waiting.add(conn)
        else:
            self._waiting.discard(conn)

    def _withdraw(self, conn: Conn) -> None:
        self._pending.discard(conn)  # (its entry in _due is skipped)
        self._embryonic.discard(conn)
        self._retiring.discard(conn)
        self._retire_late.discard(conn)
        for deferred in self._later.values():
            deferred.discard(conn)
        self._waiting.discard(conn)
        if conn not in self._offloaded:
            return
        for f in self._offloaded.pop(conn):
            packets, nbytes = f.packets, f.bytes
            try:
                present = self.flows.take(f)  # the last counts and the deletion in one step: none lost
            except BpfError as exc:
                self._error("deleting", exc)
                continue
            self._account(conn, f, present, packets, nbytes)
            if f.direction == DIR_OUT and conn in self._claims:
                self._reclaim(conn)

    # -- FULLNAT local ports shared with the program ------------------------------------------

    def _claim(self, conn: Conn, out_key: bytes) -> bool:
        """FullNat.claim: the reply key `out_key` of `conn` (binding) is ours if no entry has it (the
        program's, or a connection's of ours); a PLACEHOLDER holds it until the reply recipe is written."""
        if conn.proto != PROTO_TCP or len(out_key) != 12:
            return True  # (the program makes IPv4 TCP connections only)
        key = pack_key(PROTO_TCP, out_key)
        try:
            if not self.flows.put_new(key, PLACEHOLDER):
                return False
        except BpfError as exc:
            self._error("claiming", exc)  # (the map refuses: the engine's table decides alone)
            return True
        self._claims[conn] = key
        return True

    def _reclaim(self, conn: Conn) -> None:
        """A live FULLNAT connection's reply recipe was withdrawn: the placeholder holds its key again."""
        try:
            if not self.flows.put_new(self._claims[conn], PLACEHOLDER):
                self._error("claiming", BpfError("the program took a withdrawn connection's local port"))
        except BpfError as exc:
            self._error("claiming", exc)

    def _holds_reply(self, conn: Conn) -> bool:
        return any(f.direction == DIR_OUT for f in self._offloaded.get(conn, ()))

    def _delete_key(self, key: bytes) -> None:
        try:
            self.flows.delete_key(key)
        except BpfError as exc:
            self._error("deleting", exc)

    # -- counters --------------------------------------------------------------------------

    def refresh(self, interval: float) -> None:
        """Offload what waits; read back the offloaded connections, all or a share (every `interval` s)."""
        if self.ksched is not None:
            self.ksched.publish()  # next hops resolved, neighbours moved since the last tick
        late, self._retire_late, self._retiring = self._retire_late, self._retiring, set()
        for conn in late:  # ended in the kernel a tick ago or more, and no last segment came
            self._withdraw(conn)
        while self._due:
            self._promote(self._due.popleft()[1], 0)
        for conn in list(self._waiting):
            self._offload(conn, 0)
        # Deferred: written now if their interface is idle, regardless if they were deferred at the last
        # tick already (their interface had no round in a whole tick: an asymmetric path).
        stale, later, self._later = self._stale, self._later, {}
        for deferred in later.values():
            for conn in deferred:
                self._offload(conn, -1 if conn in stale else 0)
        self._stale = set().union(*self._later.values())
        if len(self._offloaded) <= FULL_REFRESH:
            self.refresh_all()
            return
        if not self._cursor:
            self._cursor = list(self._offloaded)
        share = math.ceil(len(self._offloaded) * interval / REFRESH_SECONDS) or 1
        for _ in range(min(share, len(self._cursor))):
            conn = self._cursor.pop()
            if conn in self._offloaded:
                self._read(conn)

    def adopt(self, conn: Conn, recipes: list[tuple[FlowEntry, bytes]]) -> None:
        """Recipes a previous lvsd left in the map (pylvs.datapath.bpf.adopt), with their packed values:
        offloaded from now on, their counts so far taken as told; a recipe that differs from what this
        engine builds (a neighbour's MAC changed meanwhile) is rewritten, its counts and state kept."""
        written = []
        for f, raw in recipes:  # (f.packets and f.bytes: the counts so far, as told)
            f.packets, f.bytes, f.last_seen_ns = counts(raw)
            f.tcp_state = VALUE.unpack(raw)[TCP_STATE]
            if f.hop is not None and _recipe(f.pack_value()) != _recipe(raw):
                try:
                    self.flows.put(f)
                except BpfError as exc:
                    self._error("writing", exc)
            written.append(f)
        if written:
            self._offloaded[conn] = tuple(written)

    def rehop(self, hops: list[Hop]) -> int:
        """Next hops whose MAC changed (updated in place): the recipes copied the old one, so those that
        leave through them are taken out and written again. How many connections were rewritten."""
        moved = set(map(id, hops))
        stale = [conn for conn, entries in self._offloaded.items()
                 if any(f.hop is not None and id(f.hop) in moved for f in entries)]
        for conn in stale:
            self._withdraw(conn)  # the last counts, then the entries with the new MACs at once
            self._offload(conn, -1)
        return len(stale)

    def reroute(self) -> None:
        """The engine forgot its hops (an interface changed): take the recipes out until it has new ones."""
        for conn in list(self._offloaded):
            self._withdraw(conn)
            self._waiting.add(conn)

    def refresh_all(self) -> None:
        """Read back every offloaded connection (before statistics are listed or zeroed)."""
        for conn in list(self._offloaded):
            self._read(conn)

    def _read(self, conn: Conn) -> None:
        for f in self._offloaded[conn]:
            packets, nbytes = f.packets, f.bytes
            try:
                present = self.flows.refresh(f)
            except BpfError as exc:
                self._error("reading", exc)
                continue
            self._account(conn, f, present, packets, nbytes)

    def _account(self, conn: Conn, f: FlowEntry, present: bool, packets: int, nbytes: int) -> None:
        """Tell the engine what the kernel counted for `f` since (packets, nbytes), the counts told before
        the entry was read back into `f`; then `f` holds the counts told."""
        if not present or f.packets <= packets:  # evicted (the engine's path serves it again) or nothing new
            f.packets, f.bytes = packets, nbytes
            return
        self.engine.account(conn, f.direction, f.packets - packets, f.bytes - nbytes, f.last_seen_ns / 1e9)

    def close(self, keep: bool = False) -> None:
        """Take every recipe out of the map (the program may stay attached: it then only passes frames),
        or with `keep` leave them there for the kernel to go on forwarding and the next lvsd to adopt."""
        if self.ksched is not None:
            self.ksched.close()  # (SYNs scheduled while no lvsd runs would have no one to adopt them)
        for fnat in self.engine.fullnat_forwarders():
            fnat.claim = None
        if not keep:
            for conn, key in list(self._claims.items()):
                if not self._holds_reply(conn):
                    self._delete_key(key)
            self._claims.clear()
            for conn in list(self._offloaded):
                self._withdraw(conn)
        self.engine.unsubscribe(self.events)

    def _error(self, what: str, exc: BpfError) -> None:
        self.errors += 1
        if self.errors <= 10:
            log.warning("fast path: %s a flow failed: %s", what, exc)
