"""Kernel scheduling: publish the schedulers' tables so the fast path schedules SYNs itself.

For mh, sh and dh services the scheduler's choice is a table lookup on a hash of the client (dh: of
the VIP; an IPv6 address folded into 32 bits first, as ip_vs_*_hashkey do), with no state that a new
connection changes. The engine publishes, per TCP service of either family, the scheduler's lookup
table (destination index per slot) and per destination a recipe template (the FlowEntry its
connections get, which for NAT depends on the VIP, the real server and the ports only);
the program (pylvs_sched.bpf.h) hashes as the kernel does, creates the connection's entries, forwards
the SYN and reports CREATED on the event ring; `FlowOffload.apply` has the engine adopt it
(`Engine.adopt_kernel`). The engine stays the authority: whatever it must decide is published as
engine-only, and the program punts those SYNs as before:
- services that are persistent, synproxy, port-zero, fwmark (while any fwmark service exists, nothing
  is published: the mark is set after tc ingress), not mh/sh/dh/rr/wrr, not TCP; rr and wrr ones with
  a destination with thresholds, a usable destination the program cannot forward to (below: the turns
  it punted would be taken again by the engine's position, which the kernel's picks move meanwhile,
  skewing the rotation), or whose sequence is longer than the table (the program counts it);
- destinations with thresholds (overload changes with every connection), FULLNAT but the one below,
  GUE over IPv6, of the other family than the service, with a tunnel checksum (GUE's, GRE's),
  without a resolved next hop (or tunnel source) yet; the program also punts what its fast path for
  the SYN's family would not execute (pylvs_fastpath6.h: tunnels other than IPv6 in IPv6 and GRE without checksum);
- everything while the director stands by, a defence strategy or --max-conns is on.
Every change is published under a new generation: the program punts SYNs of records from an older
one, so a table being rewritten is never half used. CREATED events name (slot, generation, index),
which `resolve` turns back into the service and destination published then.

rr and wrr (KSCHED_SEQ): with a fixed set of usable destinations and weights, the scheduler's choices
are periodic. The table is one period of them (`period` of pylvs.sched.rr / wrr) starting with the
Python scheduler's next choice, and the program takes entry `cursor % length` of it, the cursor (per
slot, reset to 0 with each new sequence) advanced by an atomic add. A sequence stays published, and
its cursor runs on, while the scheduler, its destinations, their weights and usability stay; any
change publishes a new one from where the Python scheduler is then. CREATED carries the cursor value:
`follow` moves the Python scheduler past the kernel's choice (`advance_to`), so a SYN the engine
schedules itself continues the sequence (docs/design.md, "Kernel scheduling of rr and wrr").

FULLNAT (IPv4, without the PROXY protocol; with TOA, lvsd's default, the request template is marked F_TOA
and the program inserts it into the client's first ACK): the templates
are made with the unspecified local address and port 0; per slot the service's IPv4 local addresses and
their whole port range are published (pylvs_ksched_laddrs). The program claims a pair by creating
the reply entry with BPF_NOEXIST and reports it with CREATED; the engine binds the connection there
(FullNat.bind_at). The engine's allocator claims its ports in the map the same way (FullNat.claim,
FlowOffload's claims), so both take from the whole range and never the same reply key. A service
without an IPv4 local address, and IPv6 FULLNAT, stay the engine's.
"""

from __future__ import annotations

import ctypes
import logging
import struct
from typing import TYPE_CHECKING, NamedTuple

from pylvs.datapath.bpf.adopt import tunnel_source
from pylvs.datapath.bpf.libbpf import BpfError
from pylvs.datapath.bpf.maps import Counters
from pylvs.engine.conntrack import Conn
from pylvs.engine.events import ServicesChanged
from pylvs.engine.flow import F_ENGINE_ONLY, VALUE, addr16, family_of
from pylvs.engine.forward import fullnat
from pylvs.engine.forward.fullnat import FullNat
from pylvs.ipvs_uapi import PROTO_TCP, SVC_F_SCHED1, SVC_F_SCHED2, Method
from pylvs.sched.base import usable

if TYPE_CHECKING:
    from pylvs.datapath.bpf.loader import FastPath
    from pylvs.engine.engine import Engine
    from pylvs.engine.services import RealServer, VirtualService

log = logging.getLogger(__name__)

# The maps of pylvs_sched.bpf.h and their layouts (native byte order, as the C structs).
STATE_MAP, SVC_MAP, TABLE_MAP, DEST_MAP, IFACE_MAP, CURSOR_MAP, LADDR_MAP, COUNTER_MAP = (
    b"pylvs_ksched_state", b"pylvs_ksched_svcs", b"pylvs_ksched_tables", b"pylvs_ksched_dests",
    b"pylvs_ksched_ifaces", b"pylvs_ksched_cursors", b"pylvs_ksched_laddrs", b"pylvs_ksched_counters")
COUNTERS = ("created", "synack", "punt_off", "punt_flags", "punt_existing", "punt_no_service", "punt_service",
            "punt_stale", "punt_no_dest", "punt_dest", "punt_ring", "punt_collision", "punt_long", "punt_lport")
TAB_MAX = 4096
MAX_SLOTS = 256  # pylvs_ksched_tables' entries: services scheduled here at once
NO_DEST = 0xFFFF
SCHED_SEQ = 4  # rr, wrr: the table is the sequence of choices
SCHED_CODES = {"mh": 1, "sh": 2, "dh": 3, "rr": SCHED_SEQ, "wrr": SCHED_SEQ}
SVC_F_ENGINE, SVC_F_FALLBACK, SVC_F_PORT = 0x01, 0x02, 0x04
DEST_F_USABLE, DEST_F_ENGINE = 0x01, 0x02
METHODS = (Method.MASQ, Method.ROUTE, Method.TUNNEL, Method.FULLNAT)
TUNNEL_CSUM = ("csum", "remcsum")  # --tun-flags asking for GUE's UDP or GRE's checksum (the program has none)
LADDRS_MAX = 16  # KSCHED_LADDRS: a service's local addresses the program takes from (the first ones)

STATE = struct.Struct("=II")
SVC_KEY = struct.Struct("=BB2s16s")  # family, protocol, port, address (IPv4 mapped)
SVC = struct.Struct("=IIBBH")  # generation, slot, scheduler, flags, sequence length
TABLE = struct.Struct(f"={TAB_MAX}H")
DEST_KEY = struct.Struct("=II")
DEST_HEAD = struct.Struct("=I2s2x16sI4x")  # flags, rport, raddr (IPv4 mapped), index; then the in and out templates
IFACE = struct.Struct("=6sH")
LADDRS = struct.Struct(f"=IHH{4 * LADDRS_MAX}s")  # count, the program's ports: first, how many; IPv4 addresses
CURSOR = struct.Struct("=Q")

_CPORT = b"\0\0"  # the template's client (the unspecified address, its port 0): the program writes the real one in
_VALUE_SIZE = VALUE.size


class Sequence(NamedTuple):
    """An rr/wrr service's sequence as published: what it was computed from, its table, and per entry the
    arguments of the scheduler's `advance_to` that continue after it."""

    basis: tuple
    packed: bytes
    steps: tuple[tuple, ...] | None  # None: longer than the table (the engine schedules)


class Published(NamedTuple):
    svc: VirtualService
    dests: tuple[RealServer, ...]
    seq: Sequence | None = None  # rr, wrr: the sequence published


def _length(seq: Sequence | None) -> int:
    """The service record's length: 0 for a sequence too long (punt_long), 1 for an empty one (its one
    entry nobody: punt_no_dest), none for the hash schedulers."""
    if seq is None or seq.steps is None:
        return 0
    return max(1, len(seq.steps))


class KernelScheduler:
    """Keeps the program's scheduling maps equal to what the engine would decide (see the module text)."""

    def __init__(self, engine: Engine, fast: FastPath) -> None:
        self.engine = engine
        lib = fast.lib
        self.lib = lib

        def fd(name: bytes) -> int:
            return lib.bpf_map__fd(lib.pointer(lib.bpf_object__find_map_by_name(fast._obj, name),
                                               f"finding {name.decode()}"))

        self._fds = {name: fd(name) for name in (STATE_MAP, SVC_MAP, TABLE_MAP, DEST_MAP, IFACE_MAP, CURSOR_MAP,
                                                 LADDR_MAP)}
        self.counters = Counters(lib, fd(COUNTER_MAP), COUNTERS)
        self.events = engine.subscribe(services=True)
        self.gen = 0
        self._slots: dict[VirtualService, int] = {}
        # What the maps hold: key -> value bytes (service records without their generation).
        self._svcs: dict[bytes, tuple[int, int, int, int]] = {}
        self._tables: dict[int, bytes] = {}
        self._dests: dict[tuple[int, int], bytes] = {}
        self._ifaces: dict[int, bytes] = {}
        self._laddrs: dict[int, bytes] = {}  # slot -> its FULLNAT local addresses as published
        self._history: dict[tuple[int, int], Published] = {}  # (slot, gen) -> what it held
        self._packed: dict[VirtualService, tuple[list, tuple, bytes]] = {}  # tables packed, by service
        self._seqs: dict[VirtualService, Sequence] = {}  # rr, wrr: the sequences published
        self._restart: set[int] = set()  # slots of new sequences: their cursors go back to 0
        self._followed: dict[int, tuple[Sequence, int]] = {}  # slot -> the latest cursor the engine followed
        self.errors = 0

    # -- publishing ------------------------------------------------------------------------

    def drain(self) -> None:
        """Republish after a change of the service table (ServicesChanged)."""
        if self.events is not None and any(isinstance(e, ServicesChanged) for e in self.events):
            self.publish()

    def publish(self) -> None:
        """Write what changed under a new generation (called on table changes and every tick: next hops
        resolve and neighbours move between changes)."""
        try:
            self._publish()
        except BpfError as exc:
            self.errors += 1
            if self.errors <= 10:
                log.warning("kernel scheduling: publishing failed, SYNs go to the engine: %s", exc)
            self._put(STATE_MAP, 0, STATE.pack(0, 0), quiet=True)

    def _publish(self) -> None:
        svcs, tables, dests, published = self._desired()
        ifaces = {i.ifindex: IFACE.pack(i.mac, i.mtu) for i in self.engine.interfaces.values()}
        laddrs = {slot: self._laddr_record(pub.svc) for slot, pub in published.items()}
        if (svcs == self._svcs and tables == self._tables and dests == self._dests and ifaces == self._ifaces
                and laddrs == self._laddrs and not self._restart):
            return
        self._put(STATE_MAP, 0, STATE.pack(0, 0))  # every SYN to the engine while the maps change
        gen = self.gen + 1
        for ifindex, value in ifaces.items():
            if self._ifaces.get(ifindex) != value:
                self._put(IFACE_MAP, ifindex, value)
        for ifindex in self._ifaces.keys() - ifaces.keys():
            self._delete(IFACE_MAP, ctypes.c_uint32(ifindex))
        for slot, value in tables.items():
            if self._tables.get(slot) != value:
                self._put(TABLE_MAP, slot, value)
        for slot in self._restart & tables.keys():
            self._put(CURSOR_MAP, slot, CURSOR.pack(0))
        for slot, value in laddrs.items():
            if self._laddrs.get(slot) != value:
                self._put(LADDR_MAP, slot, value)
        for key, value in dests.items():
            if self._dests.get(key) != value:
                self._update(DEST_MAP, DEST_KEY.pack(*key), value)
        for key in self._dests.keys() - dests.keys():
            self._delete(DEST_MAP, DEST_KEY.pack(*key))
        for key, (slot, sched, flags, length) in svcs.items():
            self._update(SVC_MAP, key, SVC.pack(gen, slot, sched, flags, length))
        for key in self._svcs.keys() - svcs.keys():
            self._delete(SVC_MAP, key)
        self._svcs, self._tables, self._dests, self._ifaces, self._laddrs = svcs, tables, dests, ifaces, laddrs
        self.gen = gen
        self._restart.clear()
        for slot, pub in published.items():
            self._history[(slot, gen)] = pub
        for key in [k for k in self._history if k[1] < gen - 4]:  # events are read within milliseconds
            del self._history[key]
        if svcs and any(not flags & SVC_F_ENGINE for _, _, flags, _ in svcs.values()):
            self._put(STATE_MAP, 0, STATE.pack(gen, 0))

    def _desired(self):
        engine = self.engine
        svcs: dict[bytes, tuple[int, int, int, int]] = {}
        tables: dict[int, bytes] = {}
        dests: dict[tuple[int, int], bytes] = {}
        published: dict[int, Published] = {}
        if self._engine_decides():
            self._slots.clear()
            self._seqs.clear()  # the engine's picks meanwhile move where a sequence published again starts
            return svcs, tables, dests, published
        live = [s for s in engine.table if s.protocol == PROTO_TCP and not s.fwmark]
        for svc in list(self._slots):
            if svc not in live:
                del self._slots[svc]
                self._packed.pop(svc, None)
                self._seqs.pop(svc, None)
        for svc in live:
            key = SVC_KEY.pack(family_of(svc.addr), PROTO_TCP, svc.port.to_bytes(2, "big"), addr16(svc.addr))
            code = SCHED_CODES.get(svc.scheduler)
            slot = self._slot(svc) if code and self._eligible(svc) else None
            if slot is None:
                svcs[key] = (0, 0, SVC_F_ENGINE, 0)
                self._seqs.pop(svc, None)
                continue
            records = [self._dest_record(svc, dest, i) for i, dest in enumerate(svc.dests)]
            if code == SCHED_SEQ and any(usable(d) and DEST_HEAD.unpack_from(r)[0] & DEST_F_ENGINE
                                         for d, r in zip(svc.dests, records, strict=True)):
                # A turn the program punts would be taken again by the engine's own position, which the
                # kernel's picks read in batches move meanwhile: the sequence is the engine's alone.
                del self._slots[svc]
                svcs[key] = (0, 0, SVC_F_ENGINE, 0)
                self._seqs.pop(svc, None)
                continue
            flags = ((SVC_F_FALLBACK if svc.flags & SVC_F_SCHED1 else 0)
                     | (SVC_F_PORT if svc.flags & SVC_F_SCHED2 else 0))
            seq = self._sequence(svc, slot) if code == SCHED_SEQ else None
            svcs[key] = (slot, code, flags, _length(seq))
            tables[slot] = seq.packed if seq else self._table(svc)
            for i, record in enumerate(records):
                dests[(slot, i)] = record
            published[slot] = Published(svc, tuple(svc.dests), seq)
        return svcs, tables, dests, published

    def _table(self, svc: VirtualService) -> bytes:
        """The scheduler's table as destination indices, packed (kept while table and dests stay)."""
        table, dests = svc.sched.table, tuple(svc.dests)
        cached = self._packed.get(svc)
        if cached is not None and cached[0] is table and cached[1] == dests:
            return cached[2]
        index = {id(d): i for i, d in enumerate(dests)}
        slots = [NO_DEST if d is None else index.get(id(d), NO_DEST) for d in table]
        packed = TABLE.pack(*slots, *[NO_DEST] * (TAB_MAX - len(slots)))
        self._packed[svc] = (table, dests, packed)
        return packed

    def _sequence(self, svc: VirtualService, slot: int) -> Sequence:
        """rr, wrr: the scheduler's choices ahead, one period starting with its next, as destination
        indices. Kept while the scheduler, its dests, their weights and usability stay (the kernel walks
        it meanwhile); a new one starts where the scheduler is now and its cursor at 0."""
        dests = tuple(svc.dests)
        basis = (svc.sched, dests, tuple((d.weight, usable(d)) for d in dests))
        seq = self._seqs.get(svc)
        if seq is not None and seq.basis == basis:
            return seq
        steps = svc.sched.period(TAB_MAX)
        index = {id(d): i for i, d in enumerate(dests)}
        slots = [index[id(step[0])] for step in steps or ()]
        packed = TABLE.pack(*slots, *[NO_DEST] * (TAB_MAX - len(slots)))
        seq = self._seqs[svc] = Sequence(basis, packed, None if steps is None else tuple(steps))
        self._restart.add(slot)
        return seq

    @staticmethod
    def _laddr_record(svc: VirtualService) -> bytes:
        """The service's IPv4 local addresses (the first LADDRS_MAX) and their ports (the whole range: the
        engine claims its own ports in the map too)."""
        addrs = [la.addr for la in svc.laddrs if len(la.addr) == 4][:LADDRS_MAX]
        return LADDRS.pack(len(addrs), fullnat.LPORT_MIN, fullnat.LPORT_MAX - fullnat.LPORT_MIN + 1, b"".join(addrs))

    def _engine_decides(self) -> bool:
        """Nothing is scheduled here: standing by, a defence strategy or a connection cap, or fwmark
        services (their marks come after tc ingress, so a SYN's service is not known here)."""
        engine = self.engine
        d = engine.defense
        return (engine.standby or bool(d.drop_entry or d.drop_packet or d.secure_tcp or d.max_conns)
                or any(s.fwmark for s in engine.table))

    @staticmethod
    def _eligible(svc: VirtualService) -> bool:
        # rr, wrr: a threshold makes a destination's usability change with its connections, and with it
        # the sequence (mh, sh, dh: only that destination's SYNs are the engine's).
        return (bool(svc.port) and not svc.persistent and not svc.synproxy and len(svc.dests) < NO_DEST
                and (SCHED_CODES[svc.scheduler] != SCHED_SEQ
                     or not any(d.u_threshold or d.l_threshold for d in svc.dests)))

    def _slot(self, svc: VirtualService) -> int | None:
        slot = self._slots.get(svc)
        if slot is None:
            free = set(range(MAX_SLOTS)) - set(self._slots.values())
            if not free:
                return None
            slot = self._slots[svc] = min(free)
        return slot

    def _dest_record(self, svc: VirtualService, dest: RealServer, index: int) -> bytes:
        """The destination's flags and recipe templates (engine-only when the kernel cannot reproduce it)."""
        flags = DEST_F_USABLE if usable(dest) else 0
        rport = (dest.port or svc.port).to_bytes(2, "big")
        raddr = addr16(dest.addr)
        templates = self._templates(svc, dest) if self._reproducible(svc, dest) else None
        if templates is None:
            return DEST_HEAD.pack(flags | DEST_F_ENGINE, rport, raddr, index) + bytes(2 * _VALUE_SIZE)
        return DEST_HEAD.pack(flags, rport, raddr, index) + templates

    def _reproducible(self, svc: VirtualService, dest: RealServer) -> bool:
        return (dest.method in METHODS and len(dest.addr) == len(svc.addr) and not dest.u_threshold
                and not dest.l_threshold
                and (dest.method != Method.MASQ or bool(dest.port))
                and (dest.method != Method.TUNNEL or dest.tun_type != "gue" or len(dest.addr) == 4)
                and (dest.method != Method.TUNNEL or dest.tun_type == "ipip" or dest.tun_flags not in TUNNEL_CSUM)
                and (dest.method != Method.FULLNAT or self._fullnat_here(svc)))

    @staticmethod
    def _fullnat_here(svc: VirtualService) -> bool:
        """FULLNAT the program can make: IPv4, with an IPv4 local address, without the PROXY protocol (the
        engine inserts its header); TOA the program inserts itself (the request template is marked F_TOA)."""
        return len(svc.addr) == 4 and any(len(la.addr) == 4 for la in svc.laddrs) and not svc.proxy_protocol

    def _templates(self, svc: VirtualService, dest: RealServer) -> bytes | None:
        """The recipes a connection to `dest` gets, for a client the program fills in; None while the next
        hop is unknown (its resolution is under way: the next tick publishes it)."""
        engine = self.engine
        v6 = len(svc.addr) == 16
        forwarder = engine.inet6.forwarder(dest) if v6 else engine.forwarders[dest.method]
        vport = svc.port.to_bytes(2, "big")
        dport = dest.port.to_bytes(2, "big") if dest.method in (Method.MASQ, Method.FULLNAT) and dest.port else vport
        conn = Conn(PROTO_TCP, bytes(len(svc.addr)), _CPORT, svc.addr, vport, dest.addr, dport)
        conn.svc, conn.dest, conn.forwarder = svc, dest, forwarder
        if isinstance(forwarder, FullNat):
            forwarder.template(conn)  # the local address and port: the program's (ks_claim)
            if conn.out_flow.flags & F_ENGINE_ONLY:  # (the PROXY protocol; TOA: F_TOA, the program's)
                return None
        elif forwarder.bind(conn, engine.conns) is not None:
            return None
        f = conn.in_flow
        f.hop = engine.egress.hop(dest.addr)
        if f.hop is None or not f.offloadable:
            return None
        if dest.method == Method.TUNNEL:
            f.outer_src = tunnel_source(engine, f) or b""
            if not f.outer_src:
                return None
        out = conn.out_flow.pack_value() if conn.out_flow is not None else bytes(_VALUE_SIZE)
        return f.pack_value() + out

    # -- CREATED events --------------------------------------------------------------------

    def resolve(self, slot: int, gen: int, index: int) -> tuple[VirtualService, RealServer] | None:
        """The service and destination a CREATED event names, as published then; None if forgotten."""
        pub = self._history.get((slot, gen))
        if pub is None or index >= len(pub.dests):
            return None
        return pub.svc, pub.dests[index]

    def follow(self, slot: int, gen: int, cursor: int) -> None:
        """rr, wrr: the kernel took `cursor` of the sequence published under `gen`: the Python scheduler
        continues after that choice, so a SYN the engine schedules itself comes next, as in IPVS. Only a
        sequence still published, and only forward (two CPUs' events may come in either order)."""
        pub = self._history.get((slot, gen))
        seq = pub.seq if pub is not None else None
        if seq is None or not seq.steps or self._seqs.get(pub.svc) is not seq or pub.svc.sched is not seq.basis[0]:
            return
        followed = self._followed.get(slot)
        if followed is not None and followed[0] is seq and followed[1] >= cursor:
            return
        self._followed[slot] = (seq, cursor)
        pub.svc.sched.advance_to(*seq.steps[cursor % len(seq.steps)])

    # -- map access ------------------------------------------------------------------------

    def _put(self, name: bytes, index: int, value: bytes, quiet: bool = False) -> None:
        key = ctypes.c_uint32(index)
        rc = self.lib.bpf_map_update_elem(self._fds[name], ctypes.byref(key), value, 0)
        if not quiet:
            self.lib.check(rc, f"writing {name.decode()}")

    def _update(self, name: bytes, key: bytes, value: bytes) -> None:
        self.lib.check(self.lib.bpf_map_update_elem(self._fds[name], key, value, 0), f"writing {name.decode()}")

    def _delete(self, name: bytes, key) -> None:
        self.lib.bpf_map_delete_elem(self._fds[name], key if isinstance(key, bytes) else ctypes.byref(key))

    def close(self) -> None:
        """Every SYN to the engine again, and the published records gone."""
        self._put(STATE_MAP, 0, STATE.pack(0, 0), quiet=True)
        for key in self._svcs:
            self._delete(SVC_MAP, key)
        for dkey in self._dests:
            self._delete(DEST_MAP, DEST_KEY.pack(*dkey))
        self._svcs, self._tables, self._dests, self._ifaces, self._laddrs = {}, {}, {}, {}, {}
        self._seqs.clear()
        if self.events is not None:
            self.engine.unsubscribe(self.events)
            self.events = None

