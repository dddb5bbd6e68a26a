"""IPv6 frames through the engine: the per-family half of `Engine.process` for ethertype 0x86DD.

The steps are those of the IPv4 path (parse, look up, schedule if new, account, execute the
connection's recipe) with IPv6's header: the extension headers are walked to the upper-layer header
(a first fragment is handled, later ones carry no ports and are dropped, as IPv4 fragments are);
connections are keyed by the 36 bytes source + destination address + ports. Neighbour discovery
replaces ARP: solicitations for owned addresses are answered, and `announce` sends unsolicited
advertisements. ICMPv6 echo requests to owned addresses are answered; ICMPv6 errors quoting a
tracked connection go to its forwarder's `icmp6`. Scheduling, accounting and expiry are the
engine's own (`Engine._persist`, `_create`, `_in`, `_out`, `_expire`), so both families share one
connection table, one set of statistics and the same TCP state machine.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pylvs.engine.conntrack import DIR_IN, Conn
from pylvs.engine.egress import NOTHING, Buffer, Output
from pylvs.engine.egress6 import Egress6
from pylvs.engine.events import ConnEventKind
from pylvs.engine.forward.base import Forwarder
from pylvs.engine.forward.inet6 import FORWARDERS6
from pylvs.engine.forward.nat46 import Nat46
from pylvs.engine.forward.nat64 import Nat64
from pylvs.engine.services import RealServer
from pylvs.engine.synproxy import Handshake
from pylvs.ipvs_uapi import Method
from pylvs.packet import ipv6 as v6
from pylvs.packet.layout import ETH, IP, PROTO_TCP, PROTO_UDP, TCP_ACK, TCP_RST, TCP_SYN
from pylvs.packet.vnet import EMPTY as EMPTY_VNET
from pylvs.packet.vnet import F_NEEDS_CSUM
from pylvs.sched.base import Flow

if TYPE_CHECKING:
    from pylvs.engine.engine import Engine

KEY = slice(IP + v6.V6_SRC, IP + v6.V6_DST + 16)


class Inet6:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.egress6 = Egress6(engine.egress)
        self.forwarders: dict[Method, Forwarder] = {
            m: cls(engine.egress, self.egress6) for m, cls in FORWARDERS6.items()}
        self.nat64 = Nat64(engine.egress, self.egress6)
        self.nat46 = Nat46(engine.egress, self.egress6)

    def forwarder(self, dest: RealServer, client_len: int = 16) -> Forwarder | None:
        """The forwarder of a new connection with IPv6 on either side (`client_len`: the client address's
        size) to `dest`: by its method, NAT64 or NAT46 for a FULLNAT one of the other family."""
        if len(dest.addr) != client_len:
            if dest.method != Method.FULLNAT:
                return None
            return self.nat64 if client_len == 16 else self.nat46
        return self.forwarders.get(dest.method)

    def process(self, buf: Buffer, ifindex: int, now: float, mark: int) -> Output:
        e = self.engine
        drops = e.drops
        if len(buf) < IP + v6.HDR_LEN or buf[IP] >> 4 != 6:
            drops["malformed"] += 1
            return NOTHING
        end = IP + v6.HDR_LEN + (buf[IP + v6.V6_PLEN] << 8 | buf[IP + v6.V6_PLEN + 1])
        dst = bytes(buf[IP + v6.V6_DST:IP + v6.V6_DST + 16])
        ours = dst in e.owned
        if end > len(buf):
            if ours:
                drops["malformed"] += 1
            return NOTHING
        parsed = v6.walk(buf, end)
        if parsed is None:
            if ours:
                drops["malformed"] += 1
            return NOTHING
        proto, l4 = parsed.proto, parsed.l4
        if proto == v6.NH_ICMPV6 and not parsed.fragment:
            return self._icmp6(buf, ifindex, l4, end, dst, ours, now)
        if buf[ETH:ETH + 6] != e._macs.get(ifindex):
            return NOTHING  # not addressed to us at layer 2
        if proto not in (PROTO_TCP, PROTO_UDP):
            if ours:
                drops["unknown_protocol"] += 1
            return NOTHING
        if not parsed.first:
            if ours:
                drops["fragment"] += 1  # no ports here: later fragments are not reassembled
            return NOTHING
        if end - l4 < (20 if proto == PROTO_TCP else 8):
            if ours:
                drops["malformed"] += 1
            return NOTHING
        key = bytes(buf[KEY]) + bytes(buf[l4:l4 + 4])
        hit = e._tables[proto].get(key)
        if hit is None and not ours and not mark:
            return NOTHING
        partial = buf[0] & F_NEEDS_CSUM
        flags = buf[l4 + 13] if proto == PROTO_TCP else 0
        totlen = end - IP
        conn: Conn | None = None
        if hit is not None:
            conn, direction = hit
            if direction != DIR_IN:
                return e._out(conn, buf, flags, l4, totlen, partial, now)
            if flags & TCP_SYN and not flags & (TCP_ACK | TCP_RST) and e._reuse(conn):
                mark = conn.svc.fwmark
                e._expire(conn, ConnEventKind.REMOVED)
                conn = None
            elif not conn.dest.available:
                if not e.settings.expire_nodest_conn:
                    drops["dest_unavailable"] += 1
                    return NOTHING
                mark = conn.svc.fwmark
                e._expire(conn, ConnEventKind.REMOVED)
                conn = None
        if conn is None:
            scheduled = self._schedule(buf, key, proto, l4, flags, now, mark)
            if scheduled.__class__ is not Conn:
                return scheduled  # type: ignore[return-value]
            conn = scheduled  # type: ignore[assignment]
        return e._in(conn, buf, flags, l4, totlen, partial, now)

    def _schedule(self, buf: Buffer, key: bytes, proto: int, l4: int, flags: int, now: float,
                  mark: int) -> Conn | Output:
        """A new connection (ip_vs_schedule), as Engine._schedule does for IPv4 (SYN proxy included)."""
        e = self.engine
        caddr, vaddr, cport, vport = key[0:16], key[16:32], key[32:34], key[34:36]
        svc = e.table.by_fwmark6.get(mark) if mark else None
        if svc is None:
            index = e.table.index[proto]
            svc = index.get(vaddr + vport) or index.get(vaddr + b"\0\0")
        if svc is None:
            e.drops["no_service"] += 1
            return NOTHING
        handshake = None
        if proto == PROTO_TCP and svc.synproxy:
            handshake = e.synproxy.screen(svc, buf, l4, flags, now)
            if handshake.__class__ is not Handshake:
                return handshake  # type: ignore[return-value] - the SYN answered with a cookie, or dropped
        elif proto == PROTO_TCP and (flags & TCP_RST or not (flags & TCP_SYN or e.settings.sloppy_tcp)):
            e.drops["no_conn"] += 1
            return NOTHING
        if not e._admit():
            return NOTHING
        flow = Flow(proto, caddr, int.from_bytes(cport, "big"), vaddr, int.from_bytes(vport, "big"), now)
        template = None
        if svc.persistent:
            dest, template = e._persist(svc, flow, vport, now)
        else:
            dest = svc.sched.schedule(svc, flow)
        if dest is None:
            e.drops["no_dest"] += 1
            return self.egress6.icmp_error(buf, v6.DEST_UNREACH, v6.CODE_PORT_UNREACH, 0, now)
        if self.forwarder(dest) is None:
            e.drops["method_unsupported"] += 1
            return NOTHING
        conn = e._create(svc, dest, proto, caddr, cport, vaddr, vport, now)
        if conn is None:
            return NOTHING
        if template is not None:
            conn.control = template
            template.n_control += 1
        if handshake is not None:
            return e.synproxy.open(conn, handshake, buf, now)  # type: ignore[arg-type]
        return conn

    # -- ICMPv6 -----------------------------------------------------------------------------

    def _icmp6(self, buf: Buffer, ifindex: int, l4: int, end: int, dst: bytes, ours: bool, now: float) -> Output:
        e = self.engine
        if end - l4 < 8:
            if ours:
                e.drops["malformed"] += 1
            return NOTHING
        itype = buf[l4]
        if itype == v6.NEIGHBOUR_SOLICIT:
            return self._solicitation(buf, ifindex, l4, end)
        if buf[ETH:ETH + 6] != e._macs.get(ifindex):
            return NOTHING
        packet = memoryview(buf)[IP:end]
        if ours and itype == v6.ECHO_REQUEST:
            return self.egress6.send_ip(v6.echo_reply(packet, l4 - IP), now)
        if itype not in v6.ERROR_TYPES:
            if ours:
                e.drops["icmp_unrelated"] += 1
            return NOTHING
        # The quoted packet: its IPv6 header, then (after any extension headers) the ports.
        emb = l4 + 8
        quoted = v6.walk(buf, end, emb) if end - emb >= v6.HDR_LEN else None
        tunnel = self.forwarders[Method.TUNNEL]
        if quoted is not None and self.egress6.own(bytes(buf[emb + v6.V6_SRC:emb + v6.V6_SRC + 16])):
            inner = tunnel.inner_quote(buf, quoted.proto, quoted.l4, end)
            out = tunnel.about_own_packet(buf, emb, inner, end, e.conns, now) if inner is not None else None
            if out is not None:
                return out  # about a packet we tunnelled (Packet Too Big on the way to a real server)
        if quoted is None or quoted.proto not in (PROTO_TCP, PROTO_UDP) or end - quoted.l4 < 4 or not quoted.first:
            if ours:
                e.drops["icmp_unrelated"] += 1
            return NOTHING
        el4 = quoted.l4
        # The quote travels the other way: its destination is the sender of our packet.
        key = (bytes(buf[emb + v6.V6_DST:emb + v6.V6_DST + 16]) + bytes(buf[emb + v6.V6_SRC:emb + v6.V6_SRC + 16])
               + bytes(buf[el4 + 2:el4 + 4]) + bytes(buf[el4:el4 + 2]))
        hit = e.conns.lookup(quoted.proto, key)
        if hit is None:
            if ours:
                e.drops["icmp_no_conn"] += 1
            return NOTHING
        conn, direction = hit
        return conn.forwarder.icmp6(conn, buf, l4, end, emb, el4, direction, now)

    def _solicitation(self, buf: Buffer, ifindex: int, l4: int, end: int) -> Output:
        """Answer a neighbour solicitation for an owned address (as `_arp` answers ARP requests)."""
        iface = self.engine.interfaces.get(ifindex)
        packet = memoryview(buf)[IP:end]
        target = v6.solicited_target(packet, l4 - IP)
        if iface is None or target is None or target not in self.engine.owned:
            return NOTHING
        src = bytes(packet[v6.V6_SRC:v6.V6_SRC + 16])
        if src == bytes(16):  # duplicate address detection: answer all nodes
            frame = v6.unsolicited_advertisement(iface.mac, target)
        else:
            frame = v6.advertisement(iface.mac, target, bytes(buf[ETH + 6:ETH + 12]), src, solicited=True)
        return [(ifindex, bytearray(EMPTY_VNET + frame))]

    def announce(self, mac: bytes, addr: bytes) -> bytes:
        """The unsolicited advertisement that claims `addr` (what gratuitous ARP is to IPv4)."""
        return EMPTY_VNET + v6.unsolicited_advertisement(mac, addr)

