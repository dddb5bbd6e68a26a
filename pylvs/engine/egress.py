"""Where forwarded and originated frames go: the narrow interface forwarders get from the engine.

The kernel keeps these helpers in ip_vs_xmit.c below the per-method transmit functions
(__ip_vs_get_out_rt, ip_vs_send_or_cont); here they are one object the engine owns and hands to
each forwarder, so forwarders never import the engine:
- `hop(addr)`: the next hop (egress interface, MACs, MTU) from the kernel-backed Routes, or None while
  the neighbour is being resolved;
- `send(buf, hop, towards, now)`: the one send-or-park tail: set the MACs and emit, or hold the frame
  until the neighbour of `towards` is known;
- `send_ip(packet, now)`: route and emit an IPv4 packet the director originates (ICMP);
- `drop(reason)`: count a drop (pylvs.engine.drops) and emit nothing;
- `interfaces`, `source_address(ifindex)`: the director's own interfaces (tunnel sources).
"""

from __future__ import annotations

from collections.abc import Callable, Set
from dataclasses import dataclass, field

from pylvs.engine.drops import Drops
from pylvs.engine.hops import Hop, Routes
from pylvs.packet.layout import ETH, ETHERTYPE_IPV4, IP_DST
from pylvs.packet.vnet import EMPTY as EMPTY_VNET

Buffer = bytearray | memoryview
Output = list[tuple[int, Buffer]]

NOTHING: Output = []
PARK_LIMIT = 16          # frames held per destination while its neighbour is resolved
PARK_SECONDS = 3.0
_ETH_IPV4 = bytes(12) + ETHERTYPE_IPV4.to_bytes(2, "big")


@dataclass
class Interface:
    ifindex: int
    name: str
    mac: bytes
    addrs: set[bytes] = field(default_factory=set)
    mtu: int = 1500


class Egress:
    def __init__(self, routes: Routes, drops: Drops, owned: Set[bytes]) -> None:
        self.routes = routes
        self.drops = drops
        self.owned = owned  # the addresses the engine answers for (never a tunnel source)
        self.interfaces: dict[int, Interface] = {}
        self._parked: dict[bytes, list[tuple[float, Buffer]]] = {}
        self._sources: dict[int, bytes | None] = {}
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
        buf[ETH:ETH + 12] = hop.eth
        return [(hop.ifindex, buf)]

    def send_ip(self, packet: bytes, now: float) -> Output:
        """Route and emit an IPv4 packet the director originates."""
        dst = packet[IP_DST:IP_DST + 4]
        frame = bytearray(EMPTY_VNET + _ETH_IPV4 + packet)
        return self.send(frame, self.routes.hop(dst), dst, now)

    def drop(self, reason: str) -> Output:
        self.drops[reason] += 1
        return NOTHING

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
                b[ETH:ETH + 12] = hop.eth
                out.append((hop.ifindex, b))
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
