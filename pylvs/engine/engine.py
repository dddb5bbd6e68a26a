"""The sans-I/O director: frames and time in, frames and events out.

`Engine.process(buf, ifindex, now, mark)` takes one received frame (virtio_net_hdr + Ethernet, see
pylvs.packet.layout), rewrites it in place when it belongs to a virtual service, and returns the
frames to send as `(ifindex, buffer)` pairs; `tick(now)` expires connections and runs the rate
estimator. What happened is pulled, never pushed: `subscribe()` gives a consumer its own queue of
connection events and coalesced ServicesChanged events (pylvs.engine.events). The engine never
calls the OS and never reads a clock; the I/O layer owns sockets, the kernel's routes and neighbours,
and time.

The packet path reads as the kernel's ip_vs_in: parse, look up, (expire and) schedule if new, account,
execute the connection's recipe through its forwarder.
"""

from __future__ import annotations

import struct
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pylvs.engine import pe_sip, sctpstate, tcpstate
from pylvs.engine.conntrack import DIR_IN, Conn, ConnTable, TemplateKey
from pylvs.engine.defense import Defense
from pylvs.engine.drops import Drops
from pylvs.engine.egress import NOTHING, Buffer, Egress, Interface, Output
from pylvs.engine.events import ConnEvent, ConnEventKind, Event, Subscription
from pylvs.engine.flow import F_ENGINE_ONLY
from pylvs.engine.forward.base import Forwarder
from pylvs.engine.forward.dr import DirectRouting
from pylvs.engine.forward.fullnat import FullNat, kernel_sent_toa
from pylvs.engine.forward.nat import Nat
from pylvs.engine.forward.tun import Tunnel
from pylvs.engine.hops import Routes
from pylvs.engine.inet6 import Inet6
from pylvs.engine.services import RealServer, VirtualService
from pylvs.engine.stats import ESTIMATOR_PERIOD, Stats
from pylvs.engine.synproxy import Handshake, SynProxy
from pylvs.engine.table import ServiceTable
from pylvs.ipvs_uapi import (
    CONN_F_ASSURED,
    CONN_F_FWD_MASK,
    CONN_F_INACTIVE,
    CONN_F_NOOUTPUT,
    CONN_F_ONE_PACKET,
    CONN_F_SYNC,
    CONN_F_TEMPLATE,
    PROTO_SCTP,
    SVC_F_ONEPACKET,
    Method,
)
from pylvs.packet import arp, icmp
from pylvs.packet.ipv6 import ETHERTYPE_IPV6
from pylvs.packet.layout import (
    ETH,
    ETH_TYPE,
    ETHERTYPE_ARP,
    ETHERTYPE_IPV4,
    IP,
    PROTO_ICMP,
    PROTO_TCP,
    PROTO_UDP,
    TCP_ACK,
    TCP_FIN,
    TCP_RST,
    TCP_SYN,
)
from pylvs.packet.vnet import EMPTY as EMPTY_VNET
from pylvs.packet.vnet import F_NEEDS_CSUM
from pylvs.sched.base import Flow

if TYPE_CHECKING:
    from pylvs.sync.proto import SyncConn

__all__ = ["Engine", "Interface", "Settings"]

# From the Ethernet header on: destination MAC, ethertype, then the IPv4 fields the fast path reads
# (version/IHL, total length, fragment word, protocol) and the 12 bytes saddr, daddr, sport, dport,
# which are contiguous when the IP header has no options: the connection key, in one call.
_HEADERS = struct.Struct("!6s6xHB1xH2xH1xB2x12s")
_KEY4 = struct.Struct("4s")
# TCP flags that may change a connection's state: a segment without them, on an established connection,
# takes the common path (sES + ack = sES); it is also where a FlowEntry's work ends (pylvs.engine.flow).
STATE_FLAGS = TCP_FIN | TCP_SYN | TCP_RST
FORWARDERS: dict[Method, type[Forwarder]] = {
    Method.MASQ: Nat, Method.ROUTE: DirectRouting, Method.FULLNAT: FullNat, Method.TUNNEL: Tunnel}
_EMPTY: frozenset[bytes] = frozenset()
UNLIMITED = 1 << 62


@dataclass
class Settings:
    """Daemon-wide behaviour, with the kernel's defaults (ipvs.md §3.4, §3.7, §7)."""

    tcp_timeouts: list[int] = field(default_factory=lambda: list(tcpstate.DEFAULT_TIMEOUTS))
    udp_timeout: int = 300
    expire_nodest_conn: bool = False
    expire_quiescent_template: bool = False
    conn_reuse_mode: int = 1
    sloppy_tcp: bool = False
    sloppy_sctp: bool = False
    sctp_timeouts: list[int] = field(default_factory=lambda: list(sctpstate.TIMEOUTS))
    # Memory-pressure defence (pylvs.engine.defense), the sysctls' defaults; max_conns 0: no cap.
    amemthresh: int = 1024
    am_droprate: int = 10
    drop_entry: int = 0
    drop_packet: int = 0
    secure_tcp: int = 0
    max_conns: int = 0
    # The kernel fast path schedules SYNs of mh, sh, dh, rr and wrr services itself (pylvs.datapath.bpf.ksched).
    kernel_sched: bool = True
    # FULLNAT TCP without the PROXY protocol sends the client's address as TOA (Alibaba LVS's fullnat_toa_entry).
    fullnat_toa: bool = True


class Engine:
    def __init__(self, routes: Routes, settings: Settings | None = None) -> None:
        self.settings = settings or Settings()
        self.drops = Drops()
        self.table = ServiceTable(methods=set(FORWARDERS))
        self.conns = ConnTable()
        self.total = Stats()
        # The addresses the director answers for (VIPs, FULLNAT local addresses): the table's own set,
        # or nothing while standing by for another director (sync's backup_only).
        self.standby = False
        self.owned: set[bytes] | frozenset[bytes] = self.table.addresses
        self.egress = Egress(routes, self.drops, self.owned)
        self.egress.flows_changed = self._flows_changed
        self.forwarders: dict[Method, Forwarder] = {m: cls(self.egress) for m, cls in FORWARDERS.items()}
        self.inet6 = Inet6(self)
        for fnat in self.fullnat_forwarders():
            fnat.toa = self.settings.fullnat_toa
        self._macs: dict[int, bytes] = {}
        self._local_addrs: set[bytes] = set()  # the director's own addresses (tunnel sources)
        self._tables = self.conns.by_proto
        self._next_estimate: float | None = None
        # Subscriptions (pylvs.engine.events): who hears about services, connections and packets.
        self._subs: list[Subscription] = []
        self._conn_queues: list[deque[Event]] = []
        # The queue of the consumer whose report is being applied (tcp_transition, adopt_kernel): the
        # events that report makes are not queued back to it, as it knows them already.
        self._origin: deque[Event] | None = None
        self._packet_queues: list[deque[Event]] = []
        self._standby_changes = 0
        self._published = 0
        self._new_budget = UNLIMITED  # connections the current round of frames may still create
        s = self.settings
        self.defense = Defense(s.amemthresh, s.drop_entry, s.drop_packet, s.secure_tcp, s.am_droprate, s.max_conns)
        self.synproxy = SynProxy(self.egress, self._inject)

    # -- configuration ----------------------------------------------------------------------

    @property
    def routes(self) -> Routes:
        return self.egress.routes

    @property
    def interfaces(self) -> dict[int, Interface]:
        return self.egress.interfaces

    def add_interface(self, iface: Interface) -> None:
        self.egress.add_interface(iface)
        self._macs[iface.ifindex] = iface.mac
        self._local_addrs.update(iface.addrs)

    def replace_interface(self, old_ifindex: int, iface: Interface) -> None:
        """An interface came back under a new ifindex: forget the old one and every hop through it (each
        recipe finds its hop again on its next packet)."""
        self.egress.interfaces.pop(old_ifindex, None)
        self._macs.pop(old_ifindex, None)
        self.add_interface(iface)
        self._local_addrs = {a for i in self.interfaces.values() for a in i.addrs}
        for conn in self.conns.conns():
            for f in (conn.in_flow, conn.out_flow):
                if f is not None:
                    f.hop = None

    def set_standby(self, standby: bool) -> None:
        """Stand by for another director: claim no address (no ARP, no new connections) until told not to.

        Connections already known (adopted from sync) are still forwarded should their packets arrive.
        """
        if standby == self.standby:
            return
        self.standby = standby
        self.owned = _EMPTY if standby else self.table.addresses
        self.egress.owned = self.owned
        self._standby_changes += 1

    def start_round(self, new_conns: int = UNLIMITED) -> None:
        """A new round of frames (one wakeup of a ring): at most `new_conns` of them may create a
        connection; the rest are dropped (counted as new_conn_budget; their clients retransmit), so a
        flood of new connections cannot starve the established ones sharing the round."""
        self._new_budget = new_conns

    @property
    def generation(self) -> int:
        """Grows with every change to the service table or to what the director owns."""
        return self.table.generation + self._standby_changes

    def announce(self, addrs: Iterable[bytes] | None = None) -> Output:
        """Gratuitous ARP (IPv6: unsolicited neighbour advertisements) on every interface for `addrs`
        (owned ones only), or for every owned address."""
        chosen = self.owned if addrs is None else [a for a in addrs if a in self.owned]
        return [
            (iface.ifindex, bytearray(EMPTY_VNET + arp.gratuitous(iface.mac, addr) if len(addr) == 4
                                      else self.inet6.announce(iface.mac, addr)))
            for iface in self.interfaces.values()
            for addr in sorted(chosen)
        ]

    # -- events -----------------------------------------------------------------------------

    def subscribe(self, services: bool = True, conns: bool = False, packets: bool = False) -> Subscription:
        """A new consumer. `services`: ServicesChanged (one is queued at once, for the current state);
        `conns`: connection events; `packets`: also COUNTED after every client -> server packet."""
        sub = Subscription(self._publish_services, services, conns, packets)
        self._subs.append(sub)
        if conns or packets:
            self._conn_queues.append(sub.queue)
        if packets:
            self._packet_queues.append(sub.queue)
        if services:
            sub.services_changed(self.generation)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        self._subs.remove(sub)
        for queues in (self._conn_queues, self._packet_queues):
            if any(q is sub.queue for q in queues):
                queues[:] = [q for q in queues if q is not sub.queue]

    def _publish_services(self) -> None:
        generation = self.generation
        if generation != self._published:
            self._published = generation
            for sub in self._subs:
                if sub.services:
                    sub.services_changed(generation)

    def _emit(self, kind: ConnEventKind, conn: Conn, value: int = 0) -> None:
        origin, event = self._origin, None
        for q in self._conn_queues:
            if q is not origin:
                if event is None:
                    event = ConnEvent(kind, conn, value)
                q.append(event)

    def _flows_changed(self, conn: Conn) -> None:
        if self._conn_queues:
            self._emit(ConnEventKind.FLOWS, conn)

    # -- packet path ------------------------------------------------------------------------

    def process(self, buf: Buffer, ifindex: int, now: float, mark: int = 0) -> Output:
        """Handle one frame; `mark` is the firewall mark nftables gave it (for fwmark services)."""
        try:
            dmac, etype, vihl, totlen, frag, proto, key = _HEADERS.unpack_from(buf, ETH)
        except struct.error:
            return self._short(buf, ifindex)
        if etype != ETHERTYPE_IPV4:
            if etype == ETHERTYPE_IPV6:
                return self.inet6.process(buf, ifindex, now, mark)  # the IPv6 half (pylvs.engine.inet6)
            return self._arp(buf, ifindex) if etype == ETHERTYPE_ARP else NOTHING
        if dmac != self._macs.get(ifindex):
            return NOTHING  # not addressed to us at layer 2 (another host's frame, multicast)
        ihl = (vihl & 0x0F) << 2
        if vihl >> 4 != 4 or ihl < 20 or totlen < ihl or IP + totlen > len(buf):
            self.drops["malformed"] += 1
            return NOTHING
        if proto not in (PROTO_TCP, PROTO_UDP):
            if proto == PROTO_ICMP:
                return self._icmp(buf, ihl, totlen, now)
            if proto == PROTO_SCTP:
                return self._sctp(buf, ihl, totlen, key, now, mark)
            if key[4:8] in self.owned:
                self.drops["unknown_protocol"] += 1
            return NOTHING
        # 1. parse
        l4 = IP + ihl
        if totlen < ihl + (20 if proto == PROTO_TCP else 8):
            self.drops["malformed"] += 1
            return NOTHING
        if ihl != 20:  # IP options: the ports are further on
            key = key[:8] + _KEY4.unpack_from(buf, l4)[0]
        # 2. look up
        hit = self._tables[proto].get(key)
        if hit is None and key[4:8] not in self.owned and not mark:
            return NOTHING
        # A valid header sums to 0xFFFF, i.e. 0 modulo 0xFFFF (see checksum.ones_sum).
        if int.from_bytes(buf[IP:l4], "big") % 0xFFFF:
            self.drops["bad_ip_checksum"] += 1
            return NOTHING
        if frag & 0x3FFF:
            self.drops["fragment"] += 1  # MF set or offset != 0: we do not reassemble
            return NOTHING
        partial = buf[0] & F_NEEDS_CSUM
        flags = buf[l4 + 13] if proto == PROTO_TCP else 0
        conn: Conn | None = None
        if hit is not None:
            conn, direction = hit
            if direction != DIR_IN:
                return self._out(conn, buf, flags, l4, totlen, partial, now)
            # 3. a known connection that cannot go on: a new SYN on a finished one, or its real server gone
            if flags & TCP_SYN and not flags & (TCP_ACK | TCP_RST) and self._reuse(conn):
                mark = conn.svc.fwmark
                self._expire(conn, ConnEventKind.REMOVED)
                conn = None
            elif not conn.dest.available:
                if not self.settings.expire_nodest_conn:
                    self.drops["dest_unavailable"] += 1
                    return NOTHING
                mark = conn.svc.fwmark
                self._expire(conn, ConnEventKind.REMOVED)
                conn = None
        if conn is None:
            # 4. schedule
            scheduled = self._schedule(buf, key, proto, flags, totlen, now, mark)
            if scheduled.__class__ is not Conn:
                return scheduled  # type: ignore[return-value] - dropped, or answered with an ICMP error
            conn = scheduled  # type: ignore[assignment]
            if conn.flags & CONN_F_ONE_PACKET:
                return self._one_packet(conn, buf, l4, totlen, partial, now)
        # 5. account and execute
        return self._in(conn, buf, flags, l4, totlen, partial, now)

    def _sctp(self, buf: Buffer, ihl: int, totlen: int, key: bytes, now: float, mark: int) -> Output:
        """process() for SCTP: the same steps; a connection starts with an INIT chunk and its state
        follows the first chunk of each packet (pylvs.engine.sctpstate)."""
        l4 = IP + ihl
        if totlen < ihl + 12:  # the common header: ports, verification tag, CRC32c
            self.drops["malformed"] += 1
            return NOTHING
        if ihl != 20:
            key = key[:8] + _KEY4.unpack_from(buf, l4)[0]
        hit = self._tables[PROTO_SCTP].get(key)
        if hit is None and key[4:8] not in self.owned and not mark:
            return NOTHING
        if int.from_bytes(buf[IP:l4], "big") % 0xFFFF:
            self.drops["bad_ip_checksum"] += 1
            return NOTHING
        if (buf[IP + 6] << 8 | buf[IP + 7]) & 0x3FFF:  # MF or an offset
            self.drops["fragment"] += 1
            return NOTHING
        partial = buf[0] & F_NEEDS_CSUM
        chunks = bytes(buf[l4 + 12:min(IP + totlen, l4 + 12 + 4096)])
        cid = chunks[0] if len(chunks) >= 4 else -1  # no chunk: no new connection, no transition
        ev = sctpstate.event(chunks) if cid >= 0 else -1
        conn: Conn | None = None
        if hit is not None:
            conn, direction = hit
            if direction != DIR_IN:
                return self._out(conn, buf, ev, l4, totlen, partial, now)
            if cid == sctpstate.CID_INIT and self._reuse(conn):
                mark = conn.svc.fwmark
                self._expire(conn, ConnEventKind.REMOVED)
                conn = None
            elif not conn.dest.available:
                if not self.settings.expire_nodest_conn:
                    self.drops["dest_unavailable"] += 1
                    return NOTHING
                mark = conn.svc.fwmark
                self._expire(conn, ConnEventKind.REMOVED)
                conn = None
        if conn is None:
            scheduled = self._schedule(buf, key, PROTO_SCTP, cid, totlen, now, mark)
            if scheduled.__class__ is not Conn:
                return scheduled  # type: ignore[return-value]
            conn = scheduled  # type: ignore[assignment]
        return self._in(conn, buf, ev, l4, totlen, partial, now)

    def _sctp_state(self, conn: Conn, direction: int, ev: int, now: float) -> None:
        """set_sctp_state: as _tcp_state, with the SCTP table; active only in ESTABLISHED."""
        if ev < 0:
            return
        if conn.flags & CONN_F_NOOUTPUT:
            if direction == sctpstate.OUTPUT:
                conn.flags &= ~CONN_F_NOOUTPUT
            else:
                direction = sctpstate.INPUT_ONLY
        new = sctpstate.next_state(conn.state, direction, ev)
        changed = new != conn.state
        if changed:
            dest = conn.dest
            if new == sctpstate.ESTABLISHED:
                if conn.flags & CONN_F_INACTIVE:
                    conn.flags &= ~CONN_F_INACTIVE
                    dest.inactconns -= 1
                    dest.activeconns += 1
                if conn.control is not None:
                    conn.control.flags |= CONN_F_ASSURED
            elif not conn.flags & CONN_F_INACTIVE:
                conn.flags |= CONN_F_INACTIVE
                dest.activeconns -= 1
                dest.inactconns += 1
            conn.state = new
        conn.timeout = self.settings.sctp_timeouts[new]
        self.conns.refresh(conn, now)
        if changed and self._conn_queues:
            self._emit(ConnEventKind.STATE, conn, new)

    def _short(self, buf: Buffer, ifindex: int) -> Output:
        """Frames too short for the IPv4 fast path: ARP, or runts."""
        if len(buf) >= IP and (buf[ETH_TYPE] << 8 | buf[ETH_TYPE + 1]) == ETHERTYPE_ARP:
            return self._arp(buf, ifindex)
        if len(buf) < IP:
            self.drops["runt"] += 1
        elif (buf[ETH_TYPE] << 8 | buf[ETH_TYPE + 1]) == ETHERTYPE_IPV4:
            self.drops["malformed"] += 1
        return NOTHING

    def _in(self, conn: Conn, buf: Buffer, flags: int, l4: int, totlen: int, partial: bool, now: float) -> Output:
        if conn.proto == PROTO_TCP:
            if conn.state == tcpstate.ESTABLISHED and not flags & STATE_FLAGS:
                conn.expires = now + conn.timeout  # the common case: no transition (sES + ack = sES)
            else:
                self._tcp_state(conn, tcpstate.INPUT, flags, now)
        elif conn.proto == PROTO_SCTP:
            self._sctp_state(conn, sctpstate.INPUT, flags, now)  # flags: the SCTP event
        else:
            conn.expires = now + conn.timeout
        conn.in_pkts += 1
        if self._packet_queues:
            event = ConnEvent(ConnEventKind.COUNTED, conn, conn.in_pkts)
            for q in self._packet_queues:
                q.append(event)
        st = conn.dest.stats
        st.inpkts += 1
        st.inbytes += totlen
        st = conn.svc.stats
        st.inpkts += 1
        st.inbytes += totlen
        st = self.total  # the kernel's tot_stats (/proc/net/ip_vs_stats): survives deleted services
        st.inpkts += 1
        st.inbytes += totlen
        return conn.forwarder.inbound(conn, buf, l4, partial, now)

    def _one_packet(self, conn: Conn, buf: Buffer, l4: int, totlen: int, partial: bool, now: float) -> Output:
        """One-packet scheduling (-o): the datagram goes with a connection that is never entered in the
        table, so the next one is scheduled again (ip_vs_conn_put expires it at once); not synced."""
        for st in (conn.dest.stats, conn.svc.stats, self.total):
            st.inpkts += 1
            st.inbytes += totlen
        out = conn.forwarder.inbound(conn, buf, l4, partial, now)
        conn.forwarder.release(conn)
        conn.dead = True
        return out

    def _out(self, conn: Conn, buf: Buffer, flags: int, l4: int, totlen: int, partial: bool, now: float) -> Output:
        if conn.proto == PROTO_TCP:
            if conn.state == tcpstate.ESTABLISHED and not flags & STATE_FLAGS and not conn.flags & CONN_F_NOOUTPUT:
                conn.expires = now + conn.timeout
            else:
                self._tcp_state(conn, tcpstate.OUTPUT, flags, now)
        elif conn.proto == PROTO_SCTP:
            self._sctp_state(conn, sctpstate.OUTPUT, flags, now)
        else:
            conn.expires = now + conn.timeout
            if conn.control is not None:
                conn.control.flags |= CONN_F_ASSURED  # a UDP reply assures the template
        st = conn.dest.stats
        st.outpkts += 1
        st.outbytes += totlen
        st = conn.svc.stats
        st.outpkts += 1
        st.outbytes += totlen
        st = self.total
        st.outpkts += 1
        st.outbytes += totlen
        return conn.forwarder.outbound(conn, buf, l4, partial, now)

    def _reuse(self, conn: Conn, scheduled_elsewhere: bool = False) -> bool:
        """conn_reuse_mode: a new SYN on a finished connection starts a new one (ipvs.md §3.7).
        `scheduled_elsewhere`: the SYN was scheduled and forwarded by a second data path that could not see
        this connection (its entries gone at FIN_WAIT, DR and TUN): continuing the old connection would send
        the handshake's ACK to another real server than the SYN, so FIN_WAIT without replies is finished
        as with mode bit 2."""
        mode = self.settings.conn_reuse_mode
        if not mode:
            return False
        if self.settings.expire_nodest_conn and conn.dest.weight == 0:
            return True
        if conn.control is not None:
            return False  # is_new_conn_expected: a controlled (persistent) connection is reused as it is
        if conn.proto == PROTO_SCTP:
            return conn.state == sctpstate.CLOSED
        if conn.state in (tcpstate.TIME_WAIT, tcpstate.CLOSE):
            return True
        return bool((mode & 2 or scheduled_elsewhere) and conn.state == tcpstate.FIN_WAIT
                    and conn.flags & CONN_F_NOOUTPUT)

    def _tcp_state(self, conn: Conn, offset: int, flags: int, now: float) -> None:
        if conn.flags & CONN_F_NOOUTPUT:
            if offset == tcpstate.OUTPUT:
                conn.flags &= ~CONN_F_NOOUTPUT
            else:
                offset = tcpstate.INPUT_ONLY
        new = self.defense.next_state(conn.state, offset, flags)
        changed = new != conn.state
        if changed:
            dest = conn.dest
            if new in tcpstate.ACTIVE:
                if conn.flags & CONN_F_INACTIVE:
                    conn.flags &= ~CONN_F_INACTIVE
                    dest.inactconns -= 1
                    dest.activeconns += 1
            elif not conn.flags & CONN_F_INACTIVE:
                conn.flags |= CONN_F_INACTIVE
                dest.activeconns -= 1
                dest.inactconns += 1
            conn.state = new
            if new == tcpstate.ESTABLISHED and conn.control is not None:
                conn.control.flags |= CONN_F_ASSURED
        conn.timeout = self.settings.tcp_timeouts[new]
        self.conns.refresh(conn, now)
        if changed and self._conn_queues:
            self._emit(ConnEventKind.STATE, conn, new)

    def tcp_transition(self, key: bytes, tcp_flags: int, now: float,
                       origin: Subscription | None = None) -> tuple[Conn, int] | None:
        """A TCP segment a second data path forwarded by its FlowEntry and reported because it changed the
        state there (a FIN, a RST, the ACK ending LAST_ACK): the state machine runs here as for a segment
        of our own, reports applied in the order they were made. The connection and its state before,
        or None if gone. `origin`: the reporting consumer's subscription, which is not told the change
        back (its STATE event goes to the other consumers only)."""
        hit = self._tables[PROTO_TCP].get(key)
        if hit is None:
            return None
        conn, direction = hit
        before = conn.state
        self._origin = origin.queue if origin is not None else None
        try:
            self._tcp_state(conn, tcpstate.INPUT if direction == DIR_IN else tcpstate.OUTPUT, tcp_flags, now)
        finally:
            self._origin = None
        if direction == DIR_IN and conn.slow is not None:
            kernel_sent_toa(conn, tcp_flags)  # FULLNAT: that segment carried the TOA the kernel inserted
        return conn, before

    def fullnat_forwarders(self) -> list[FullNat]:
        """The forwarders that take FULLNAT local ports: FULLNAT of either family, NAT64 and NAT46."""
        inet6 = self.inet6
        return [f for f in (*self.forwarders.values(), *inet6.forwarders.values(), inet6.nat64, inet6.nat46)
                if isinstance(f, FullNat)]

    def adopt_kernel(self, svc: VirtualService, dest: RealServer, key: bytes, now: float,
                     origin: Subscription | None = None, local: tuple[bytes, bytes] | None = None) -> Conn | None:
        """A TCP connection a second data path scheduled itself (a hash scheduler's SYN, pylvs_sched.bpf.h)
        to `dest` of `svc`: made here as _schedule makes it (counted as scheduled, inactive, CREATED), then
        the SYN's state change (NONE -> SYN_RECV) that path made with it; its counts come as for any
        segment that path forwards.
        None where this engine would not have made it: a connection with that tuple that a SYN does not
        replace (conn_reuse_mode; a DR or TUN one in FIN_WAIT is replaced, see _reuse), or one holding its
        reply tuple; the caller withdraws the entries.
        `origin`: the reporting consumer's subscription, not told the new connection's CREATED and STATE
        (a connection it replaces is REMOVED for every consumer). `local`: FULLNAT's local address and port
        as that path took them (bound there, FullNat.bind_at); a connection holding the reply tuple is
        replaced if its entries are done (TIME_WAIT, CLOSE: the program took them out), else refused."""
        table = self._tables[PROTO_TCP]
        n = (len(key) - 4) // 2  # 4 or 16: IPv4 or IPv6
        caddr, vaddr, cport, vport = key[0:n], key[n:2 * n], key[2 * n:2 * n + 2], key[2 * n + 2:2 * n + 4]
        hit = table.get(key)
        if hit is not None:
            if hit[1] != DIR_IN or not self._reuse(hit[0], scheduled_elsewhere=True):
                return None
            self._expire(hit[0], ConnEventKind.REMOVED)  # its reply tuple, the same as the new one's, too
        if dest.method == Method.MASQ and dest.addr + caddr + dest.port.to_bytes(2, "big") + cport in table:
            return None
        if local is not None:
            held = table.get(dest.addr + local[0] + (dest.port.to_bytes(2, "big") if dest.port else vport) + local[1])
            if held is not None:
                if held[0].state not in (tcpstate.TIME_WAIT, tcpstate.CLOSE):
                    return None
                self._expire(held[0], ConnEventKind.REMOVED)
        self._origin = origin.queue if origin is not None else None
        try:
            conn = self._create(svc, dest, PROTO_TCP, caddr, cport, vaddr, vport, now, local=local)
            if conn is not None:
                self._tcp_state(conn, tcpstate.INPUT, TCP_SYN, now)
        finally:
            self._origin = None
        return conn

    def account(self, conn: Conn, direction: int, packets: int, nbytes: int, last_seen: float) -> None:
        """Packets a second data path forwarded for `conn` by its FlowEntry, counted there since the last
        call: the statistics, the expiry (from `last_seen`, on this engine's clock) and sync follow. The
        statistics count them also for a connection that has just gone (its last packets)."""
        if packets <= 0:
            return
        if direction == DIR_IN:
            for st in (conn.dest.stats, conn.svc.stats, self.total):
                st.inpkts += packets
                st.inbytes += nbytes
        else:
            for st in (conn.dest.stats, conn.svc.stats, self.total):
                st.outpkts += packets
                st.outbytes += nbytes
        if conn.dead:
            return
        if direction == DIR_IN:
            before = conn.in_pkts
            conn.in_pkts += packets
            if self._packet_queues:
                event = ConnEvent(ConnEventKind.COUNTED, conn, conn.in_pkts, before)
                for q in self._packet_queues:
                    q.append(event)
        expires = last_seen + conn.timeout
        if expires > conn.expires:
            conn.expires = expires  # later than its heap entry: tick re-queues it (ConnTable.due)

    # -- new connections --------------------------------------------------------------------

    def _schedule(self, buf: Buffer, key: bytes, proto: int, flags: int, totlen: int, now: float,
                  mark: int) -> Conn | Output:
        """A new connection for the packet with `key` (ip_vs_schedule), or what to answer instead."""
        # Lookup order of ip_vs_service_find: firewall mark, exact VIP:port, then VIP:0 (any port).
        svc = self.table.by_fwmark.get(mark) if mark else None
        if svc is None:
            index = self.table.index[proto]
            svc = index.get(key[4:8] + key[10:12]) or index.get(key[4:8] + b"\0\0")
        if svc is None:
            self.drops["no_service"] += 1
            return NOTHING
        handshake = None
        if proto == PROTO_TCP and svc.synproxy:
            handshake = self.synproxy.screen(svc, buf, IP + ((buf[IP] & 0x0F) << 2), flags, now)
            if handshake.__class__ is not Handshake:
                return handshake  # type: ignore[return-value] - the SYN answered with a cookie, or dropped
        elif proto == PROTO_TCP and (flags & TCP_RST or not (flags & TCP_SYN or self.settings.sloppy_tcp)):
            self.drops["no_conn"] += 1  # only a SYN starts a connection (tcp_conn_schedule)
            return NOTHING
        if proto == PROTO_SCTP and (flags in (sctpstate.CID_ABORT, -1) or not (
                flags == sctpstate.CID_INIT or self.settings.sloppy_sctp)):
            self.drops["no_conn"] += 1  # only an INIT chunk starts one (sctp_conn_schedule; flags: the chunk)
            return NOTHING
        if not self._admit():
            return NOTHING
        caddr, vaddr, cport, vport = key[0:4], key[4:8], key[8:10], key[10:12]
        flow = Flow(proto, caddr, int.from_bytes(cport, "big"), vaddr, int.from_bytes(vport, "big"), now)
        template = None
        if svc.persistent:
            pe_data = b""
            if svc.pe:  # "sip", the one persistence engine there is (ip_vs_pe_sip)
                if proto == PROTO_UDP:
                    l4 = IP + ((buf[IP] & 0x0F) << 2)
                    pe_data = pe_sip.call_id(bytes(buf[l4 + 8:IP + totlen]), l4 - IP + 8)
                if not pe_data:
                    self.drops["pe_no_callid"] += 1  # ip_vs_sched_persist: fill_param failed, NF_DROP
                    return NOTHING
            dest, template = self._persist(svc, flow, vport, now, pe_data)
        else:
            dest = svc.sched.schedule(svc, flow)
        if dest is None:
            self.drops["no_dest"] += 1
            # ip_vs_leave: port unreachable to the client, even for TCP (ipvs.md §3.9), rate limited as icmp_send
            return self.egress.icmp_error(buf[IP:IP + totlen], icmp.DEST_UNREACH, icmp.CODE_PORT_UNREACH, 0, now)
        one_packet = bool(svc.flags & SVC_F_ONEPACKET) and proto == PROTO_UDP
        conn = self._create(svc, dest, proto, caddr, cport, vaddr, vport, now, one_packet)
        if conn is None:
            return NOTHING
        if template is not None and not one_packet:
            conn.control = template
            template.n_control += 1
        if handshake is not None:
            return self.synproxy.open(conn, handshake, buf, now)  # type: ignore[arg-type]
        return conn

    def _inject(self, conn: Conn, frame: bytearray, l4: int, totlen: int, now: float) -> Output:
        """A client frame of `conn` the SYN proxy made or held (either family), taken as if it had just arrived."""
        return self._in(conn, frame, frame[l4 + 13], l4, totlen, bool(frame[0] & F_NEEDS_CSUM), now)

    def _admit(self) -> bool:
        """Whether a new connection may be made (either family): under the table's cap, past the
        memory-pressure defence's drop rate, within the round's budget; each refusal counted."""
        if self.defense.full(len(self.conns)):
            self.drops["max_conns"] += 1
            return False
        if self.defense.todrop():
            self.drops["drop_packet"] += 1
            return False
        if self._new_budget <= 0:
            self.drops["new_conn_budget"] += 1
            return False
        self._new_budget -= 1
        return True

    def _persist(self, svc: VirtualService, flow: Flow, vport: bytes, now: float,
                 pe_data: bytes = b"") -> tuple[RealServer | None, Conn | None]:
        """Persistence: reuse the client network's template, or schedule and make one (ipvs.md §3.5)."""
        size = len(flow.saddr)  # 16 for IPv6, whose netmask is 16 bytes too (-M as a prefix length)
        snet = (int.from_bytes(flow.saddr, "big") & int.from_bytes(svc.netmask, "big")).to_bytes(size, "big")
        # Port-zero and FTP services keep one template for all ports; others one per virtual port.
        tport = b"\0\0" if svc.port in (0, 21) or svc.fwmark else vport
        # A fwmark template is protocol IP (0): one per client for every protocol and address of the mark.
        # (As the kernel, the mark is the first word of an address of the service's family.)
        tproto, taddr = (0, svc.fwmark.to_bytes(4, "big") + bytes(size - 4)) if svc.fwmark else (flow.protocol,
                                                                                                 flow.daddr)
        key = (tproto, snet, taddr, tport, svc.fwmark, pe_data)  # pe data: ip_vs_sip_ct_match adds the Call-ID
        tmpl = self.conns.templates.get(key)
        if tmpl is not None and not tmpl.dead:
            dest = tmpl.dest
            if dest.available and not (self.settings.expire_quiescent_template and dest.weight == 0):
                tmpl.timeout = svc.timeout
                tmpl.expires = now + svc.timeout  # refreshed on each use
                return dest, tmpl
            del self.conns.templates[key]  # invalidated: no longer found, left to expire
        dest = svc.sched.schedule(svc, flow)
        if dest is None:
            return None, None
        dport = tport if svc.port in (0, 21) or svc.fwmark else dest.port.to_bytes(2, "big")
        return dest, self._add_template(key, svc, dest, dport, now)

    def _add_template(self, key: TemplateKey, svc: VirtualService, dest: RealServer, dport: bytes,
                      now: float) -> Conn:
        tproto, snet, taddr, tport, _, pe_data = key
        tmpl = Conn(tproto, snet, b"\0\0", taddr, tport, dest.addr, dport)
        tmpl.flags = CONN_F_TEMPLATE
        tmpl.pe_data = pe_data
        tmpl.svc, tmpl.dest, tmpl.timeout = svc, dest, svc.timeout
        dest.persistconns += 1
        self.conns.add_template(key, tmpl, now)
        if self._conn_queues:
            self._emit(ConnEventKind.CREATED, tmpl)
        return tmpl

    def _create(self, svc: VirtualService, dest: RealServer, proto: int, caddr: bytes, cport: bytes,
                vaddr: bytes, vport: bytes, now: float, one_packet: bool = False,
                local: tuple[bytes, bytes] | None = None) -> Conn | None:
        forwarder = self.forwarders.get(dest.method) if len(caddr) == len(dest.addr) == 4 \
            else self.inet6.forwarder(dest, len(caddr))  # IPv6 on either side: NAT46 too
        if forwarder is None:
            raise NotImplementedError(f"forwarding method {dest.method.name}")
        dport = vport if dest.method in (Method.ROUTE, Method.TUNNEL) or not dest.port \
            else dest.port.to_bytes(2, "big")
        if self.defense.full(len(self.conns)):
            self.drops["max_conns"] += 1  # (a scheduled packet was counted by _schedule's own check)
            return None
        conn = Conn(proto, caddr, cport, vaddr, vport, dest.addr, dport)
        conn.svc, conn.dest, conn.forwarder = svc, dest, forwarder
        refused = forwarder.bind(conn, self.conns) if local is None else forwarder.bind_at(conn, *local)
        if refused is not None:
            self.drops[refused] += 1
            return None
        if not forwarder.sees_replies:
            conn.flags |= CONN_F_NOOUTPUT
        if proto == PROTO_UDP:
            conn.timeout = self.settings.udp_timeout
        elif proto == PROTO_SCTP:
            conn.timeout = self.settings.sctp_timeouts[sctpstate.NONE]
            for f in (conn.in_flow, conn.out_flow):  # the kernel fast path has no CRC32c: SCTP stays here
                if f is not None:
                    f.flags |= F_ENGINE_ONLY
        dest.stats.conns += 1
        svc.stats.conns += 1
        self.total.conns += 1
        if one_packet:
            conn.flags |= CONN_F_ONE_PACKET  # bound and unbound at once: the counts do not move
            return conn
        dest.inactconns += 1  # every connection starts inactive (ip_vs_conn_new)
        dest.conn_bound()
        self.conns.add(conn, now)
        if self._conn_queues:
            self._emit(ConnEventKind.CREATED, conn)
        return conn

    def _expire(self, conn: Conn, why: ConnEventKind = ConnEventKind.EXPIRED) -> None:
        if conn.dead:
            return
        dest = conn.dest
        if conn.flags & CONN_F_TEMPLATE:
            dest.persistconns -= 1
            self.conns.unlink(conn)
        else:
            if conn.flags & CONN_F_INACTIVE:
                dest.inactconns -= 1
            else:
                dest.activeconns -= 1
            dest.conn_unbound()
            conn.forwarder.release(conn)
            self.conns.unlink(conn)
        if self._conn_queues:
            self._emit(why, conn)
        ctl = conn.control
        if ctl is not None:
            conn.control = None
            ctl.n_control -= 1
            # A template that never saw an established connection goes with its last one.
            if not ctl.n_control and not ctl.flags & CONN_F_ASSURED:
                self._expire(ctl, why)

    # -- connection sync: what a backup receives (pylvs.sync.backup) -------------------------

    def adopt(self, rec: SyncConn, now: float, in_pkts: int = 0) -> Conn | None:
        """Create or update a connection from a sync message, as ip_vs_proc_conn does (ipvs.md §5).

        `rec.flags` come masked by the caller; an adopted connection is marked IP_VS_CONN_F_SYNC and its
        packet count set to `in_pkts` (the backup's sync threshold, as the kernel does). It is bound to
        this director's own service and real server (by address, port and fwmark); None when there is
        none, for FULLNAT (its local address and port are not in the message), and for the expiry of a
        connection replaced here.
        """
        if rec.flags & CONN_F_TEMPLATE:
            return self._adopt_template(rec, now)
        hit = self.conns.lookup(rec.protocol, rec.caddr + rec.vaddr + rec.cport + rec.vport)
        conn = hit[0] if hit is not None and hit[1] == DIR_IN else None
        if conn is not None and (conn.daddr != rec.daddr or conn.dport != rec.dport):
            if rec.flags & CONN_F_INACTIVE:
                return None  # news of the old connection: this one replaced it already
            self._expire(conn, ConnEventKind.REMOVED)
            conn = None
        if conn is None:
            svc, dest = self._sync_dest(rec)
            if dest is None or dest.method == Method.FULLNAT:
                return None
            conn = self._create(svc, dest, rec.protocol, rec.caddr, rec.cport, rec.vaddr, rec.vport, now)
            if conn is None:
                return None
            # Not scheduled here: the connection counters stay as they were (ipvs.md §6).
            dest.stats.conns -= 1
            svc.stats.conns -= 1
            self.total.conns -= 1
        if (conn.flags ^ rec.flags) & CONN_F_INACTIVE:
            conn.flags ^= CONN_F_INACTIVE
            moved = 1 if conn.flags & CONN_F_INACTIVE else -1
            conn.dest.inactconns += moved
            conn.dest.activeconns -= moved
        if rec.state != conn.state and self._conn_queues:
            self._emit(ConnEventKind.STATE, conn, rec.state)
        conn.state = rec.state
        # Version 0 sends no timeout: the state's own applies.
        conn.timeout = rec.timeout or (self.settings.udp_timeout if rec.protocol == PROTO_UDP
                                       else self.settings.sctp_timeouts[rec.state] if rec.protocol == PROTO_SCTP
                                       else self.settings.tcp_timeouts[rec.state])
        self.conns.refresh(conn, now)
        conn.flags |= CONN_F_SYNC
        conn.in_pkts = in_pkts
        return conn

    def _adopt_template(self, rec: SyncConn, now: float) -> Conn | None:
        pe_data = rec.pe_data if rec.pe_name == pe_sip.NAME else b""
        key = (rec.protocol, rec.caddr, rec.vaddr, rec.vport, rec.fwmark, pe_data)  # as _persist keys them
        tmpl = self.conns.templates.get(key)
        if tmpl is None or tmpl.dead:
            svc, dest = self._sync_dest(rec)
            if dest is None:
                return None
            tmpl = self._add_template(key, svc, dest, rec.dport, now)
        # Template states: 0 NONE, 1 ASSURED. Version 0 sends no timeout: templates then live 180 s.
        tmpl.flags = tmpl.flags | CONN_F_ASSURED if rec.state == 1 else tmpl.flags & ~CONN_F_ASSURED
        tmpl.timeout = rec.timeout or 180
        self.conns.refresh(tmpl, now)
        return tmpl

    def _sync_dest(self, rec: SyncConn) -> tuple[VirtualService | None, RealServer | None]:
        """The service (looked up as for a packet) and real server of a synced connection (ip_vs_find_dest)."""
        vport = int.from_bytes(rec.vport, "big")
        svc = ((self.table.fwmarks(rec.vaddr).get(rec.fwmark) if rec.fwmark else None)
               or self.table.find(rec.protocol, rec.vaddr, vport) or self.table.find(rec.protocol, rec.vaddr, 0))
        if svc is None:
            return None, None
        dport = int.from_bytes(rec.dport, "big")
        # fwmark services reach DR/TUN real servers on "any port" (0); the other port is tried next.
        port = 0 if rec.fwmark and rec.flags & CONN_F_FWD_MASK != Method.MASQ else dport
        return svc, svc.find_dest(rec.daddr, port) or svc.find_dest(rec.daddr, port ^ dport)

    # -- ARP and ICMP -----------------------------------------------------------------------

    def _arp(self, buf: Buffer, ifindex: int) -> Output:
        parsed = arp.parse(buf[IP:])
        iface = self.interfaces.get(ifindex)
        if parsed is None or iface is None:
            return NOTHING
        op, sha, spa, _tha, tpa = parsed
        if op != arp.OP_REQUEST or tpa not in self.owned or spa == tpa:
            return NOTHING
        return [(ifindex, bytearray(EMPTY_VNET + arp.reply(iface.mac, tpa, sha, spa)))]

    def _icmp(self, buf: Buffer, ihl: int, totlen: int, now: float) -> Output:
        body = IP + ihl
        dst = bytes(buf[IP + 16:IP + 20])
        ours = dst in self.owned
        if totlen < ihl + 8:
            if ours:
                self.drops["malformed"] += 1
            return NOTHING
        itype = buf[body]
        if ours and itype == icmp.ECHO_REQUEST:
            reply = icmp.echo_reply(buf[IP:IP + totlen], ihl, totlen)
            if reply is None:
                self.drops["malformed"] += 1
                return NOTHING
            return self.egress.send_ip(reply, now)
        if itype not in icmp.ERROR_TYPES:
            if ours:
                self.drops["icmp_unrelated"] += 1
            return NOTHING
        # The quoted packet: its IP header, then at least the 8 bytes holding the ports.
        emb = body + 8
        if totlen < ihl + 8 + 20:
            if ours:
                self.drops["malformed"] += 1
            return NOTHING
        eihl = (buf[emb] & 0x0F) << 2
        eproto = buf[emb + 9]
        if bytes(buf[emb + 12:emb + 16]) in self._local_addrs:
            # About a packet we sent from our own address (a tunnel packet, for one).
            for forwarder in self.forwarders.values():
                out = forwarder.icmp_about_own_packet(buf, ihl, totlen, emb, self.conns, now)
                if out is not None:
                    return out
        if eihl < 20 or totlen < ihl + 8 + eihl + 4 or eproto not in (PROTO_TCP, PROTO_UDP, PROTO_SCTP):
            if ours:
                self.drops["icmp_unrelated"] += 1
            return NOTHING
        el4 = emb + eihl
        # The quote travels the other way: its destination is the sender of our packet.
        key = (bytes(buf[emb + 16:emb + 20]) + bytes(buf[emb + 12:emb + 16])
               + bytes(buf[el4 + 2:el4 + 4]) + bytes(buf[el4:el4 + 2]))
        hit = self.conns.lookup(eproto, key)
        if hit is None:
            if ours:
                self.drops["icmp_no_conn"] += 1
            return NOTHING
        conn, direction = hit
        return conn.forwarder.icmp(conn, buf, ihl, totlen, emb, el4, direction, now)

    # -- time -------------------------------------------------------------------------------

    def flush_parked(self, now: float) -> Output:
        """Frames that waited for a neighbour the kernel now knows (call on neighbour events and ticks)."""
        return self.egress.flush_parked(now)

    def tick(self, now: float, host_pages: int | None = None) -> Output:
        """Expire connections, run the memory-pressure defence and the rate estimator; call about once a
        second, with the host's available memory in pages when the I/O layer knows it."""
        for conn in self.conns.due(now):
            self._expire(conn)
        if self.defense.due(now):
            self.defense.update(len(self.conns), host_pages)
            for conn in self.defense.entries_to_drop(self.conns, now):
                self._expire(conn, ConnEventKind.REMOVED)
        if self.table.trash:
            self.table.prune_trash(now)
        if self._next_estimate is None:
            self._next_estimate = now + ESTIMATOR_PERIOD
        while now >= self._next_estimate:
            self._next_estimate += ESTIMATOR_PERIOD
            self.total.estimate()
            for svc in self.table:
                svc.stats.estimate()
                for dest in svc.dests:
                    dest.stats.estimate()
        return self.egress.flush_parked(now) if self.egress.parked else NOTHING
