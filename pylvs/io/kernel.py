"""Routes and neighbours from the kernel (pyroute2), cached for the packet path.

`hop(addr)` answers from a dict in the common case. On a miss it asks the kernel for the route
(egress interface and gateway) and the neighbour entry of the next hop; when the neighbour is not
known yet it asks the kernel to resolve it (NTF_USE) and returns None, and the engine parks the
frame until a neighbour event arrives (`poll_events`).
"""

from __future__ import annotations

import logging
import socket
import time

from pyroute2 import IPRoute
from pyroute2.netlink.rtnl import RTMGRP_IPV4_ROUTE, RTMGRP_NEIGH
from pyroute2.netlink.rtnl.ndmsg import NTF_USE, NUD_FAILED, NUD_INCOMPLETE, NUD_NONE

from pylvs.engine.engine import Interface
from pylvs.engine.hops import Hop

log = logging.getLogger(__name__)

CACHE_LIMIT = 65536
RESOLVE_INTERVAL = 1.0  # seconds between resolution requests for one next hop
_UNUSABLE = NUD_NONE | NUD_INCOMPLETE | NUD_FAILED


def _mac(text: str) -> bytes:
    return bytes.fromhex(text.replace(":", ""))


class KernelRoutes:
    def __init__(self, interfaces: dict[int, Interface]) -> None:
        self.interfaces = interfaces
        self.ipr = IPRoute()
        self.events = IPRoute()
        self.events.bind(groups=RTMGRP_NEIGH | RTMGRP_IPV4_ROUTE)
        self._by_dst: dict[bytes, Hop] = {}
        self._hops: dict[tuple[int, bytes], Hop] = {}
        self._asked: dict[tuple[int, bytes], float] = {}
        self.unroutable = 0

    def fileno(self) -> int:
        return self.events.fileno()

    def hop(self, addr: bytes) -> Hop | None:
        hop = self._by_dst.get(addr)
        if hop is not None:
            return hop
        return self._lookup(addr)

    def _lookup(self, addr: bytes) -> Hop | None:
        try:
            route = self.ipr.route("get", dst=socket.inet_ntoa(addr))[0]
        except Exception:  # noqa: BLE001 - no route is an answer, not an error
            self.unroutable += 1
            return None
        oif = route.get("RTA_OIF")
        iface = self.interfaces.get(oif)
        if iface is None:
            self.unroutable += 1
            return None
        gateway = route.get("RTA_GATEWAY")
        nexthop = socket.inet_aton(gateway) if gateway else addr
        hop = self._hops.get((oif, nexthop))
        if hop is None:
            mac = self._neighbour(oif, nexthop)
            if mac is None:
                self._resolve(oif, nexthop)
                return None
            hop = self._hops[(oif, nexthop)] = Hop(oif, mac, iface.mac, iface.mtu)
        if len(self._by_dst) >= CACHE_LIMIT:
            self._by_dst.clear()
        self._by_dst[addr] = hop
        return hop

    def _neighbour(self, ifindex: int, nexthop: bytes) -> bytes | None:
        for msg in self.ipr.neigh("dump", ifindex=ifindex, dst=socket.inet_ntoa(nexthop)):
            lladdr = msg.get("NDA_LLADDR")
            if lladdr and not msg["state"] & _UNUSABLE:
                return _mac(lladdr)
        return None

    def _resolve(self, ifindex: int, nexthop: bytes) -> None:
        now = time.monotonic()
        if now - self._asked.get((ifindex, nexthop), -RESOLVE_INTERVAL) < RESOLVE_INTERVAL:
            return
        self._asked[(ifindex, nexthop)] = now
        try:
            self.ipr.neigh("replace", dst=socket.inet_ntoa(nexthop), ifindex=ifindex, flags=NTF_USE)
        except Exception as exc:  # noqa: BLE001 - resolution is retried on the next miss
            log.debug("neighbour resolution of %s failed: %s", socket.inet_ntoa(nexthop), exc)

    def poll_events(self) -> bool:
        """Read pending netlink events; True if a neighbour became usable or changed."""
        news = False
        for msg in self.events.get():
            event = msg.get("event")
            if event == "RTM_NEWNEIGH":
                lladdr, dst = msg.get("NDA_LLADDR"), msg.get("NDA_DST")
                if not lladdr or not dst or msg["state"] & _UNUSABLE:
                    continue
                hop = self._hops.get((msg["ifindex"], socket.inet_aton(dst)))
                if hop is not None:
                    hop.eth = _mac(lladdr) + hop.eth[6:]  # connections holding the hop follow
                news = True
            elif event in ("RTM_NEWROUTE", "RTM_DELROUTE"):
                self._by_dst.clear()
        return news

    def close(self) -> None:
        self.ipr.close()
        self.events.close()
