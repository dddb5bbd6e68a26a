"""Next hops: where a rewritten frame leaves and which MACs it carries.

The engine never routes by itself (DESIGN: the kernel is the source of truth). It asks a `Routes`
object, which the I/O layer backs with the kernel's routing table and neighbour cache, and which
tests back with a static map.
"""

from __future__ import annotations

from typing import Protocol


class Hop:
    """Egress interface and the 12-byte Ethernet address pair (destination MAC + source MAC).

    Hops are shared by every connection that uses the same next hop; when a neighbour's MAC
    changes the routes object updates `eth` in place, so connections follow without a lookup.
    """

    __slots__ = ("ifindex", "eth", "mtu")

    def __init__(self, ifindex: int, dst_mac: bytes, src_mac: bytes, mtu: int = 1500) -> None:
        self.ifindex = ifindex
        self.eth = dst_mac + src_mac
        self.mtu = mtu

    def __repr__(self) -> str:
        return f"Hop(if={self.ifindex}, dst={self.eth[:6].hex(':')}, src={self.eth[6:].hex(':')})"


class Routes(Protocol):
    def hop(self, addr: bytes) -> Hop | None:
        """The hop towards `addr`, or None while it is being resolved (or unroutable)."""
        ...


class StaticRoutes:
    """A fixed host-route map, for tests and for tools that know their topology."""

    def __init__(self, hops: dict[bytes, Hop] | None = None, default: Hop | None = None) -> None:
        self.hops = dict(hops or {})
        self.default = default

    def hop(self, addr: bytes) -> Hop | None:
        return self.hops.get(addr, self.default)
