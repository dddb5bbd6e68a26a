"""Routes and neighbours from the kernel, kept in memory so the packet path never waits on it.

The main routing table is dumped once and then followed through RTM_NEWROUTE/RTM_DELROUTE events;
neighbours likewise (RTM_NEWNEIGH/RTM_DELNEIGH). `hop(addr)` answers from a per-destination dict
in the common case and from a longest-prefix match over the copied table on a miss: no request to
the kernel is made and waited for inside the packet loop. When the next hop's MAC is not known,
lvsd asks the kernel to resolve it (NTF_USE, sent without waiting for an answer) and returns None:
the engine parks the frame until the neighbour event arrives (`poll_events`).

Policy routing (ip rule) is not followed: the main table decides, as for most directors.
IPv4 and IPv6 are followed alike, each family in its own table (addresses are 4 or 16 bytes).
"""

from __future__ import annotations

import errno
import logging
import socket
import struct
import time
from dataclasses import dataclass

from pyroute2 import IPRoute
from pyroute2.netlink.rtnl import RTMGRP_IPV4_ROUTE, RTMGRP_IPV6_ROUTE, RTMGRP_NEIGH
from pyroute2.netlink.rtnl.marshal import MarshalRtnl
from pyroute2.netlink.rtnl.ndmsg import NTF_USE, NUD_FAILED, NUD_INCOMPLETE, NUD_NONE

from pylvs.engine.engine import Interface
from pylvs.engine.hops import Hop

log = logging.getLogger(__name__)

CACHE_LIMIT = 65536     # destinations remembered with their hop; also bounds pending resolutions
RESOLVE_INTERVAL = 1.0  # seconds between resolution requests for one next hop
EVENT_BUFFER = 4 << 20  # kernel-side buffer for route/neighbour events (a flood of new neighbours)
EVENT_READS = 64        # datagrams read per wakeup; more keep the socket readable
RT_TABLE_MAIN = 254
RTN_UNICAST = 1
RTN_UNROUTABLE = (6, 7, 8)  # blackhole, unreachable, prohibit: the kernel would not forward either
_UNUSABLE = NUD_NONE | NUD_INCOMPLETE | NUD_FAILED
_MASKS = {bits: [((1 << bits) - 1) >> (bits - n) << (bits - n) for n in range(bits + 1)] for bits in (32, 128)}
_FAMILY = {4: socket.AF_INET, 16: socket.AF_INET6}

RTM_NEWNEIGH = 28
NLM_F_REQUEST, NLM_F_REPLACE, NLM_F_CREATE = 0x1, 0x100, 0x400
NDA_DST = 1
_NLMSG = struct.Struct("=IHHII")  # nlmsghdr: len, type, flags, seq, pid
_NDMSG = struct.Struct("=BxxxiHBB")  # ndmsg: family, ifindex, state, flags, type
_NLA = struct.Struct("=HH")  # nlattr: len, type


def _mac(text: str) -> bytes:
    return bytes.fromhex(text.replace(":", ""))


@dataclass(frozen=True)
class Route:
    """Where a prefix leads: the egress interface and gateway, or nowhere (oif None)."""

    oif: int | None
    gateway: bytes | None = None


UNROUTABLE = Route(None)


class RouteTable:
    """Prefixes of one family with their routes: longest prefix first, then the lowest metric."""

    def __init__(self, bits: int = 32) -> None:
        self._masks = _MASKS[bits]
        self._by_len: dict[int, dict[int, dict[int, Route]]] = {}  # prefix length -> network -> metric
        self._lengths: list[int] = []  # prefix lengths in use, longest first

    def __len__(self) -> int:
        return sum(len(nets) for nets in self._by_len.values())

    def add(self, network: bytes, plen: int, metric: int, route: Route) -> None:
        nets = self._by_len.get(plen)
        if nets is None:
            nets = self._by_len[plen] = {}
            self._lengths = sorted(self._by_len, reverse=True)
        nets.setdefault(int.from_bytes(network, "big") & self._masks[plen], {})[metric] = route

    def remove(self, network: bytes, plen: int, metric: int) -> None:
        nets = self._by_len.get(plen)
        key = int.from_bytes(network, "big") & self._masks[plen]
        if nets is None or key not in nets:
            return
        nets[key].pop(metric, None)
        if not nets[key]:
            del nets[key]
        if not nets:
            del self._by_len[plen]
            self._lengths = sorted(self._by_len, reverse=True)

    def lookup(self, addr: bytes) -> Route | None:
        """The route the kernel would take to `addr` (main table), or None without one."""
        value = int.from_bytes(addr, "big")
        by_len = self._by_len
        masks = self._masks
        for plen in self._lengths:
            metrics = by_len[plen].get(value & masks[plen])
            if metrics:
                return metrics[min(metrics)]
        return None

    def clear(self) -> None:
        self._by_len.clear()
        self._lengths = []


def parse_route(msg) -> tuple[bytes, int, int, Route] | None:
    """(network, prefix length, metric, route) of a main-table route message (IPv4 or IPv6), else None."""
    family = msg["family"]
    if family not in (socket.AF_INET, socket.AF_INET6):
        return None
    if (msg.get("RTA_TABLE") or msg["table"]) != RT_TABLE_MAIN:
        return None
    if msg["type"] in RTN_UNROUTABLE:
        route = UNROUTABLE
    elif msg["type"] == RTN_UNICAST:
        oif, gateway = msg.get("RTA_OIF"), msg.get("RTA_GATEWAY")
        nexthops = msg.get("RTA_MULTIPATH")
        if oif is None and nexthops:  # a multipath route: its first next hop (no spreading here)
            oif, gateway = nexthops[0]["oif"], nexthops[0].get("RTA_GATEWAY")
        route = Route(oif, socket.inet_pton(family, gateway) if gateway else None)
    else:
        return None
    network = socket.inet_pton(family, msg.get("RTA_DST") or ("0.0.0.0" if family == socket.AF_INET else "::"))
    return network, msg["dst_len"], msg.get("RTA_PRIORITY") or 0, route


def neighbour_request(ifindex: int, addr: bytes) -> bytes:
    """RTM_NEWNEIGH with NTF_USE: "resolve this neighbour" (as a packet to it would)."""
    attr = _NLA.pack(_NLA.size + len(addr), NDA_DST) + addr
    body = _NDMSG.pack(_FAMILY[len(addr)], ifindex, 0, NTF_USE, 0) + attr
    flags = NLM_F_REQUEST | NLM_F_CREATE | NLM_F_REPLACE  # no NLM_F_ACK: nobody waits for it
    return _NLMSG.pack(_NLMSG.size + len(body), RTM_NEWNEIGH, flags, 0, 0) + body


def event_socket() -> socket.socket:
    """A non-blocking rtnetlink socket subscribed to IPv4 and IPv6 route events and neighbour events.

    A plain socket, not pyroute2's: its readiness must say whether events are waiting (pyroute2
    reads ahead into buffers of its own, which a selector cannot see)."""
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_NONBLOCK, 0)
    try:
        sock.setsockopt(socket.SOL_SOCKET, 33, EVENT_BUFFER)  # SO_RCVBUFFORCE (root) ...
    except OSError:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, EVENT_BUFFER)  # ... else up to rmem_max
    sock.bind((0, RTMGRP_NEIGH | RTMGRP_IPV4_ROUTE | RTMGRP_IPV6_ROUTE))
    return sock


class KernelRoutes:
    """The `Routes` of lvsd. `ipr` (dumps), `events` and `requests` are injectable for tests."""

    def __init__(self, interfaces: dict[int, Interface], ipr=None, events=None, requests=None) -> None:
        self.interfaces = interfaces
        self.events = events if events is not None else event_socket()  # before the dumps: no change is missed
        self.ipr = ipr if ipr is not None else IPRoute()
        if requests is None:
            requests = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_NONBLOCK, 0)
        self.requests = requests  # fire-and-forget neighbour resolution
        self._marshal = MarshalRtnl()
        self.table = RouteTable()
        self.table6 = RouteTable(128)
        self._neigh: dict[tuple[int, bytes], bytes] = {}
        self._by_dst: dict[bytes, Hop] = {}
        self._hops: dict[tuple[int, bytes], Hop] = {}
        self._asked: dict[tuple[int, bytes], float] = {}
        self.unroutable = 0
        self.reloads = 0  # full re-reads after the event socket overflowed
        self.moved: list[Hop] = []  # hops whose MAC changed since the caller last cleared this
        self._load()

    def fileno(self) -> int:
        return self.events.fileno()

    def _load(self) -> None:
        self.table.clear()
        self.table6.clear()
        self._neigh.clear()
        self._by_dst.clear()
        for family in (socket.AF_INET, socket.AF_INET6):
            for msg in self.ipr.route("dump", family=family):
                self._route_event(msg)
            for msg in self.ipr.neigh("dump", family=family):
                self._neigh_event(msg)

    # -- the packet path ----------------------------------------------------------------------

    def hop(self, addr: bytes) -> Hop | None:
        hop = self._by_dst.get(addr)
        if hop is not None:
            return hop
        route = (self.table if len(addr) == 4 else self.table6).lookup(addr)
        iface = self.interfaces.get(route.oif) if route is not None and route.oif is not None else None
        if iface is None:
            self.unroutable += 1
            return None
        key = (iface.ifindex, route.gateway or addr)
        hop = self._hops.get(key)
        if hop is None:
            mac = self._neigh.get(key)
            if mac is None:
                self._resolve(key)
                return None
            hop = self._hops[key] = Hop(iface.ifindex, mac, iface.mac, iface.mtu)
        if len(self._by_dst) >= CACHE_LIMIT:
            self._by_dst.clear()
        self._by_dst[addr] = hop
        return hop

    def _resolve(self, key: tuple[int, bytes]) -> None:
        now = time.monotonic()
        if now - self._asked.get(key, -RESOLVE_INTERVAL) < RESOLVE_INTERVAL:
            return
        if len(self._asked) >= CACHE_LIMIT:
            self._asked = {k: t for k, t in self._asked.items() if now - t < RESOLVE_INTERVAL}
        self._asked[key] = now
        try:
            self.requests.send(neighbour_request(*key))
        except OSError as exc:  # a full socket buffer: the next miss asks again
            log.debug("neighbour resolution of %s failed: %s", socket.inet_ntop(_FAMILY[len(key[1])], key[1]), exc)
        self._discard_replies()

    def _discard_replies(self) -> None:
        """Errors the kernel sends back (e.g. an interface gone) are not waited for: drop them."""
        try:
            while self.requests.recv(65536, socket.MSG_DONTWAIT):
                pass
        except OSError:
            pass

    # -- kernel events ------------------------------------------------------------------------

    def poll_events(self) -> bool:
        """Read pending netlink events; True if a neighbour became usable or changed."""
        news = False
        for _ in range(EVENT_READS):
            try:
                data = self.events.recv(1 << 16, socket.MSG_DONTWAIT)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:
                if exc.errno != errno.ENOBUFS:
                    raise
                log.warning("netlink events overflowed; reading routes and neighbours again")
                self.reloads += 1
                self._load()
                return True
            for msg in self._marshal.parse(data):
                event = msg.get("event")
                if event in ("RTM_NEWNEIGH", "RTM_DELNEIGH"):
                    news |= self._neigh_event(msg)
                elif event in ("RTM_NEWROUTE", "RTM_DELROUTE"):
                    self._route_event(msg)
        return news

    def _route_event(self, msg) -> None:
        parsed = parse_route(msg)
        if parsed is None:
            return
        network, plen, metric, route = parsed
        table = self.table if len(network) == 4 else self.table6
        if msg.get("event") == "RTM_DELROUTE":
            table.remove(network, plen, metric)
        else:
            table.add(network, plen, metric, route)
        self._by_dst.clear()  # destinations follow the changed table on their next packet

    def _neigh_event(self, msg) -> bool:
        dst = msg.get("NDA_DST")
        family = msg["family"]
        if family not in (socket.AF_INET, socket.AF_INET6) or not dst:
            return False
        key = (msg["ifindex"], socket.inet_pton(family, dst))
        lladdr = msg.get("NDA_LLADDR")
        if msg.get("event") == "RTM_DELNEIGH" or not lladdr or msg["state"] & _UNUSABLE:
            self._neigh.pop(key, None)
            return False
        mac = self._neigh[key] = _mac(lladdr)
        hop = self._hops.get(key)
        if hop is not None and hop.eth[:6] != mac:
            hop.eth = mac + hop.eth[6:]  # connections holding the hop follow
            self.moved.append(hop)  # copies of it do not (the fast path's recipes)
        return True

    def reload(self) -> None:
        """Read routes and neighbours afresh, and forget hops of interfaces no longer in `interfaces`."""
        self._hops = {key: hop for key, hop in self._hops.items() if key[0] in self.interfaces}
        self._load()

    def close(self) -> None:
        self.ipr.close()
        self.events.close()
        self.requests.close()
