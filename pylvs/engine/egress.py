"""Where forwarded and originated frames go: the narrow interface forwarders get from the engine.

The kernel keeps these helpers in ip_vs_xmit.c below the per-method transmit functions
(__ip_vs_get_out_rt, ensure_mtu_is_adequate, ip_vs_send_or_cont); here they are one object the
engine owns and hands to each forwarder, so forwarders never import the engine:
- `hop(addr)`: the next hop (egress interface, MACs, MTU) from the kernel-backed Routes, or None while
  the neighbour is being resolved;
- `refuse(buf, mtu, now, local)`: the checks before a packet leaves (TTL, then DF and MTU), and the
  ICMP error that answers a packet that may not (`ttl_exceeded`, `frag_needed`);
- `send(buf, hop, towards, now)`: the one send-or-park tail: set the MACs and emit (as fragments
  when the packet is longer than the link's MTU, as ip_fragment does), or hold the frame until the
  neighbour of `towards` is known;
- `send_ip(packet, now)`, `icmp_error(...)`: route and emit an IPv4 packet the director originates;
- `drop(reason)`: count a drop (pylvs.engine.drops) and emit nothing;
- `interfaces`, `source_address(ifindex)`: the director's own interfaces (tunnel sources).
"""

from __future__ import annotations

from collections.abc import Callable, Set
from dataclasses import dataclass, field

from pylvs.engine.drops import Drops
from pylvs.engine.hops import Hop, Routes
from pylvs.packet import checksum, icmp
from pylvs.packet.layout import (
    ETH,
    ETHERTYPE_IPV4,
    IP,
    IP_CSUM,
    IP_DF,
    IP_DST,
    IP_FRAG,
    IP_PROTO,
    IP_SRC,
    IP_TTL,
    PROTO_ICMP,
    Buffer,
)
from pylvs.packet.offload import complete_partial, fragments
from pylvs.packet.vnet import EMPTY as EMPTY_VNET
from pylvs.packet.vnet import F_NEEDS_CSUM

Output = list[tuple[int, Buffer]]

NOTHING: Output = []
PARK_LIMIT = 16          # frames held per destination while its neighbour is resolved
PARK_SECONDS = 3.0
INADDR_DUMMY = bytes((192, 0, 0, 8))  # icmp_send's source when the director has no address to use
# icmp_send's per-destination limit (icmp_ratelimit 1000 ms, icmp_ratemask 0x1818: destination
# unreachable but fragmentation needed, source quench, time exceeded, parameter problem; a burst of
# XRLIM_BURST_FACTOR 6 allowed).
ICMP_RATELIMIT = 1.0
ICMP_RATEMASK = 0x1818
ICMP_BURST = 6
ICMP_PEERS_LIMIT = 65536
_ETH_IPV4 = bytes(12) + ETHERTYPE_IPV4.to_bytes(2, "big")
_DF = IP_DF >> 8


@dataclass
class Interface:
    ifindex: int
    name: str
    mac: bytes
    addrs: set[bytes] = field(default_factory=set)
    mtu: int = 1500
    addrs6: set[bytes] = field(default_factory=set)  # global IPv6 addresses (sources of ICMPv6 errors)


class Egress:
    def __init__(self, routes: Routes, drops: Drops, owned: Set[bytes]) -> None:
        self.routes = routes
        self.drops = drops
        self.owned = owned  # the addresses the engine answers for (never a tunnel source)
        self.interfaces: dict[int, Interface] = {}
        self._parked: dict[bytes, list[tuple[float, Buffer]]] = {}
        self._sources: dict[int, bytes | None] = {}
        self._icmp_peers: dict[bytes, tuple[float, float]] = {}  # destination: (tokens, last)
        # Set by the engine: a forwarder changed a connection's FlowEntry (becomes a FLOWS event).
        self.flows_changed: Callable[[object], None] = lambda conn: None

    def add_interface(self, iface: Interface) -> None:
        self.interfaces[iface.ifindex] = iface
        self._sources.pop(iface.ifindex, None)

    # -- next hops --------------------------------------------------------------------------

    def hop(self, addr: bytes) -> Hop | None:
        return self.routes.hop(addr)

    def send(self, buf: Buffer, hop: Hop | None, towards: bytes, now: float) -> Output:
        """Emit a finished frame through `hop`, or park it until the neighbour of `towards` is known."""
        if hop is None:
            return self.park(towards, buf, now)
        if len(buf) - IP > hop.mtu and not buf[1]:  # GSO super-frames are cut to size by the kernel
            return self._fragmented(buf, hop)
        buf[ETH:ETH + 12] = hop.eth
        return [(hop.ifindex, buf)]

    def _fragmented(self, buf: Buffer, hop: Hop) -> Output:
        """A packet longer than the link's MTU, as fragments (ip_fragment; IPVS sets ignore_df, so DF
        packets that got this far, such as ICMP errors, are cut too)."""
        if buf[IP] >> 4 == 6:  # IPv6 is never fragmented on the way (a frame parked before its MTU was known)
            return self.drop("packet_too_big")
        end = IP + (buf[IP + 2] << 8 | buf[IP + 3])
        if end - IP <= hop.mtu:  # only Ethernet padding made the frame long
            buf[ETH:ETH + 12] = hop.eth
            return [(hop.ifindex, buf)]
        if buf[0] & F_NEEDS_CSUM and not complete_partial(buf, end):
            return self.drop("bad_partial_checksum")
        hl = IP + ((buf[IP] & 0x0F) << 2)
        lead = EMPTY_VNET + hop.eth + _ETH_IPV4[12:]
        payload = buf[hl:end]
        return [(hop.ifindex, bytearray(b"".join((lead, h, payload[off:off + (h[2] << 8 | h[3]) - len(h)]))))
                for h, off in fragments(buf[IP:hl], payload, hop.mtu)]

    def send_ip(self, packet: bytes, now: float) -> Output:
        """Route and emit an IPv4 packet the director originates."""
        dst = packet[IP_DST:IP_DST + 4]
        frame = bytearray(EMPTY_VNET + _ETH_IPV4 + packet)
        return self.send(frame, self.routes.hop(dst), dst, now)

    def drop(self, reason: str) -> Output:
        self.drops[reason] += 1
        return NOTHING

    # -- what may not leave, and the ICMP error that says so --------------------------------

    def refuse(self, buf: Buffer, mtu: int, now: float, local: bool = True) -> Output | None:
        """The checks before a packet leaves, as __ip_vs_get_out_rt makes them: the answer to return
        instead of forwarding it, or None when it may go on (the caller then decrements the TTL).

        TTL 1 or less: time exceeded. DF and longer than `mtu` (the link's, or what a tunnel leaves
        of it; 0 while unknown): fragmentation needed (ensure_mtu_is_adequate). GSO super-frames are
        never too big (they are cut to size later), nor is ICMP (IPVS forwards errors whole).
        `local`: the packet is addressed to the director (a VIP, a FULLNAT local address), so IPVS
        routes it; False for NAT replies, which the kernel forwards (ip_forward).
        """
        if buf[IP + IP_TTL] <= 1:
            return self.ttl_exceeded(buf, now, local)
        if (mtu and len(buf) - IP > mtu and not buf[1] and buf[IP + IP_FRAG] & _DF
                and buf[IP + IP_PROTO] != PROTO_ICMP and (buf[IP + 2] << 8 | buf[IP + 3]) > mtu):
            return self.frag_needed(buf, mtu, now, local)
        return None

    def ttl_exceeded(self, buf: Buffer, now: float, local: bool = True) -> Output:
        """Count a packet whose TTL ran out here and tell its sender, quoting it as it arrived."""
        self.drops["ttl_exceeded"] += 1
        return self.icmp_error(_packet(buf), icmp.TIME_EXCEEDED, icmp.CODE_TTL_EXCEEDED, 0, now, local)

    def frag_needed(self, buf: Buffer, mtu: int, now: float, local: bool = True) -> Output:
        """Count a DF packet too big for `mtu` and tell its sender the MTU.

        IPVS checks the MTU after decrementing the TTL, so for a `local` packet the quote says TTL - 1
        (header checksum updated); the kernel's forwarding path checks before, and quotes it as it came.
        """
        self.drops["frag_needed"] += 1
        packet = _packet(buf)
        if local:
            packet = bytearray(packet[:icmp.MAX_ERROR_LEN])
            packet[IP_TTL] -= 1
            packet[IP_CSUM:IP_CSUM + 2] = b"\0\0"
            packet[IP_CSUM:IP_CSUM + 2] = checksum.checksum(packet[:(packet[0] & 0x0F) << 2]).to_bytes(2, "big")
        return self.icmp_error(packet, icmp.DEST_UNREACH, icmp.CODE_FRAG_NEEDED, mtu, now, local)

    def icmp_error(self, packet: Buffer, icmp_type: int, code: int, info: int, now: float,
                   local: bool = True) -> Output:
        """Send the sender of `packet` (from its IP header on) an ICMP error about it, as icmp_send
        does: never about an ICMP error; from the packet's destination when it was addressed to the
        director (`local`), else from the director's address towards the sender."""
        if icmp.is_error_about_error(packet):
            return NOTHING
        if not self._icmp_allowed(bytes(packet[IP_SRC:IP_SRC + 4]), icmp_type, code, now):
            return self.drop("icmp_rate_limited")
        if local:
            src = bytes(packet[IP_DST:IP_DST + 4])
        else:
            hop = self.routes.hop(bytes(packet[IP_SRC:IP_SRC + 4]))
            src = self.source_address(self.interface_for(hop)) or INADDR_DUMMY
        return self.send_ip(icmp.error(src, packet, icmp_type, code, mtu=info), now)

    def allow_icmp(self, dst: bytes, now: float) -> bool:
        """Whether a rate-limited error may go to `dst` now (the same bucket for ICMPv6 errors)."""
        return self._icmp_allowed(dst, icmp.TIME_EXCEEDED, 0, now)

    def _icmp_allowed(self, dst: bytes, icmp_type: int, code: int, now: float) -> bool:
        """icmpv4_xrlim_allow: a token bucket per destination, a second a message, bursts of six."""
        if not ICMP_RATEMASK >> icmp_type & 1 or (icmp_type, code) == (icmp.DEST_UNREACH, icmp.CODE_FRAG_NEEDED):
            return True
        tokens, last = self._icmp_peers.get(dst, (ICMP_BURST * ICMP_RATELIMIT, now))
        tokens = min(tokens + now - last, ICMP_BURST * ICMP_RATELIMIT)
        allowed = tokens >= ICMP_RATELIMIT
        if allowed:
            tokens -= ICMP_RATELIMIT
        if len(self._icmp_peers) >= ICMP_PEERS_LIMIT and dst not in self._icmp_peers:
            self._icmp_peers.clear()
        self._icmp_peers[dst] = (tokens, now)
        return allowed

    # -- frames waiting for a neighbour -----------------------------------------------------

    @property
    def parked(self) -> bool:
        return bool(self._parked)

    def park(self, addr: bytes, buf: Buffer, now: float) -> Output:
        q = self._parked.setdefault(addr, [])
        if len(q) >= PARK_LIMIT:
            self.drops["neighbour_queue_full"] += 1
        else:
            q.append((now, bytearray(buf)))
        return NOTHING

    def flush_parked(self, now: float) -> Output:
        """Send what waited for a neighbour that is now known; drop what waited too long."""
        out: Output = []
        for addr, q in list(self._parked.items()):
            hop = self.routes.hop(addr)
            if hop is None:
                keep = [(t, b) for t, b in q if now - t < PARK_SECONDS]
                self.drops["no_neighbour"] += len(q) - len(keep)
                if keep:
                    self._parked[addr] = keep
                else:
                    del self._parked[addr]
                continue
            del self._parked[addr]
            for _, b in q:
                out += self.send(b, hop, addr, now)
        return out

    # -- the director's own addresses -------------------------------------------------------

    def interface_for(self, hop: Hop | None) -> Interface | None:
        """The egress interface of `hop`; for a frame still waiting for its neighbour, the first
        interface with an address."""
        if hop is not None:
            return self.interfaces.get(hop.ifindex)
        for ifindex in sorted(self.interfaces):
            if self.interfaces[ifindex].addrs:
                return self.interfaces[ifindex]
        return None

    def source_address(self, iface: Interface | None) -> bytes | None:
        """The address packets the director originates on `iface` come from: its lowest that is not owned."""
        if iface is None:
            return None
        src = self._sources.get(iface.ifindex)
        if src is None:
            mine = sorted(a for a in iface.addrs if a not in self.owned) or sorted(iface.addrs)
            src = self._sources[iface.ifindex] = mine[0] if mine else None
        return src


def _packet(buf: Buffer) -> memoryview:
    """The IP packet in a frame, without the Ethernet padding a short frame may carry."""
    return memoryview(buf)[IP:min(IP + (buf[IP + 2] << 8 | buf[IP + 3]), len(buf))]
