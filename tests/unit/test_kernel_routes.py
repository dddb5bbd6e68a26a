"""KernelRoutes without a kernel: routes by prefix from a dump and events, neighbours resolved
without waiting, and no request to the kernel waited for inside the packet path (issue 10, item 2)."""

from __future__ import annotations

import errno
import socket

import pytest
from pyroute2.netlink.rtnl.ndmsg import NTF_USE, ndmsg
from pyroute2.netlink.rtnl.rtmsg import rtmsg

from pylvs.engine.engine import Interface
from pylvs.io.kernel import UNROUTABLE, KernelRoutes, Route, RouteTable

A, B, OTHER = 2, 3, 9  # ifindexes: two director interfaces and one that is not the director's
NUD_REACHABLE, NUD_STALE, NUD_INCOMPLETE, NUD_FAILED = 0x02, 0x04, 0x01, 0x20


def ip(text: str) -> bytes:
    return socket.inet_aton(text)


def route(dst: str, plen: int, oif: int | None = None, gateway: str | None = None, metric: int = 0,
          rtype: int = 1, table: int = 254, event: str = "RTM_NEWROUTE", family: int = 2) -> rtmsg:
    msg = rtmsg()
    msg["family"], msg["dst_len"], msg["table"], msg["type"], msg["event"] = family, plen, table, rtype, event
    attrs = [("RTA_TABLE", table)]
    if plen:
        attrs.append(("RTA_DST", dst))
    if oif is not None:
        attrs.append(("RTA_OIF", oif))
    if gateway:
        attrs.append(("RTA_GATEWAY", gateway))
    if metric:
        attrs.append(("RTA_PRIORITY", metric))
    msg["attrs"] = attrs
    return msg


def neigh(ifindex: int, dst: str, mac: str | None, state: int = NUD_REACHABLE,
          event: str = "RTM_NEWNEIGH", family: int = 2) -> ndmsg:
    msg = ndmsg()
    msg["family"], msg["ifindex"], msg["state"], msg["event"] = family, ifindex, state, event
    msg["attrs"] = [("NDA_DST", dst)] + ([("NDA_LLADDR", mac)] if mac else [])
    return msg


class FakeIPRoute:
    """Answers dumps; any other request would be the packet loop waiting on the kernel."""

    def __init__(self, routes, neighbours) -> None:
        self.routes, self.neighbours = routes, neighbours
        self.dumps = 0

    def route(self, command, family=socket.AF_INET, **kw):
        assert command == "dump", f"route {command}: the packet path must not ask the kernel"
        self.dumps += 1
        return [m for m in self.routes if m["family"] == family]

    def neigh(self, command, family=socket.AF_INET, **kw):
        assert command == "dump", f"neigh {command}: the packet path must not ask the kernel"
        return [m for m in self.neighbours if m["family"] == family]

    def close(self) -> None:
        pass


class FakeEvents:
    """The event socket: each pending message is one datagram, encoded as the kernel would."""

    TYPES = {"RTM_NEWROUTE": 24, "RTM_DELROUTE": 25, "RTM_NEWNEIGH": 28, "RTM_DELNEIGH": 29}

    def __init__(self) -> None:
        self.pending: list = []
        self.error: OSError | None = None

    def recv(self, size: int, flags: int = 0) -> bytes:
        if self.error is not None:
            error, self.error = self.error, None
            raise error
        if not self.pending:
            raise BlockingIOError(errno.EAGAIN, "nothing")
        msg = self.pending.pop(0)
        msg["header"]["type"] = self.TYPES[msg["event"]]
        msg.encode()
        return bytes(msg.data)

    def fileno(self) -> int:
        return -1

    def close(self) -> None:
        pass


class FakeRequests:
    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def send(self, data: bytes) -> int:
        self.sent.append(data)
        return len(data)

    def recv(self, size: int, flags: int = 0) -> bytes:
        raise BlockingIOError(errno.EAGAIN, "nothing")

    def close(self) -> None:
        pass


MAC_A, MAC_B = b"\x02\0\0\0\0\x0a", b"\x02\0\0\0\0\x0b"
INTERFACES = {A: Interface(A, "eth0", MAC_A, mtu=1500), B: Interface(B, "eth1", MAC_B, mtu=9000)}
ROUTES = [
    route("", 0, A, "192.0.2.1", metric=100),
    route("", 0, A, "192.0.2.254", metric=50),          # the better default
    route("192.0.2.0", 24, A),
    route("10.1.0.0", 16, B, "10.9.0.1"),
    route("10.1.2.0", 24, B),                            # on-link, more specific
    route("10.66.0.0", 16, rtype=6),                      # blackhole
    route("172.16.0.0", 12, OTHER, "172.31.0.1"),        # not through the director's interfaces
    route("198.51.100.0", 24, A, table=255, rtype=2),    # local table: ignored
]
NEIGHBOURS = [
    neigh(A, "192.0.2.254", "02:00:00:00:01:fe"),
    neigh(B, "10.9.0.1", "02:00:00:00:09:01", state=NUD_STALE),
    neigh(B, "10.1.2.3", None, state=NUD_INCOMPLETE),
]


@pytest.fixture
def routes():
    r = KernelRoutes(INTERFACES, ipr=FakeIPRoute(ROUTES, NEIGHBOURS), events=FakeEvents(),
                     requests=FakeRequests())
    yield r
    r.close()


def test_every_new_client_behind_a_gateway_shares_one_hop_without_asking_the_kernel(routes):
    hops = {id(routes.hop(ip(f"203.0.113.{i}"))) for i in range(1, 255)}
    assert len(hops) == 1
    hop = routes.hop(ip("203.0.113.7"))
    assert hop.ifindex == A and hop.eth == bytes.fromhex("0200000001fe") + MAC_A and hop.mtu == 1500
    assert routes.requests.sent == []  # nothing to resolve, nothing sent


def test_longest_prefix_then_lowest_metric(routes):
    assert routes.hop(ip("10.1.7.7")).eth[:6] == bytes.fromhex("020000000901")  # /16 via 10.9.0.1
    assert routes.hop(ip("10.1.2.3")) is None                                  # /24 on-link, unresolved
    assert routes.table.lookup(ip("10.1.2.3")) == Route(B, None)
    assert routes.table.lookup(ip("8.8.8.8")) == Route(A, ip("192.0.2.254"))
    assert routes.table.lookup(ip("198.51.100.1")) == Route(A, ip("192.0.2.254"))  # local table ignored


def test_unroutable_destinations(routes):
    assert routes.hop(ip("10.66.1.1")) is None      # blackhole
    assert routes.hop(ip("172.16.5.5")) is None     # another interface's route
    assert routes.unroutable == 2
    empty = RouteTable()
    assert empty.lookup(ip("1.1.1.1")) is None
    empty.add(ip("0.0.0.0"), 0, 0, UNROUTABLE)
    assert empty.lookup(ip("1.1.1.1")) is UNROUTABLE


def test_unknown_neighbour_is_resolved_without_waiting_then_the_frame_goes(routes):
    client = ip("10.1.2.9")
    assert routes.hop(client) is None
    assert routes.hop(client) is None  # asked once per interval, not per frame
    (request,) = routes.requests.sent
    msg = ndmsg(request)
    msg.decode()
    assert msg["header"]["type"] == 28 and msg["flags"] == NTF_USE
    assert msg["ifindex"] == B and msg.get("NDA_DST") == "10.1.2.9"
    routes.events.pending = [neigh(B, "10.1.2.9", "02:00:00:00:02:09")]
    assert routes.poll_events() is True  # the director flushes parked frames now
    assert routes.hop(client).eth == bytes.fromhex("020000000209") + MAC_B


def test_failed_or_deleted_neighbour_is_forgotten(routes):
    routes.events.pending = [neigh(B, "10.9.0.1", "02:00:00:00:09:01", state=NUD_FAILED)]
    assert routes.poll_events() is False
    assert routes.hop(ip("10.1.7.7")) is None
    routes.events.pending = [neigh(A, "192.0.2.254", "02:00:00:00:01:fe", event="RTM_DELNEIGH")]
    routes.poll_events()
    assert routes._neigh.get((A, ip("192.0.2.254"))) is None


def test_changed_neighbour_mac_reaches_existing_hops(routes):
    hop = routes.hop(ip("203.0.113.1"))
    routes.events.pending = [neigh(A, "192.0.2.254", "02:00:00:00:0f:fe")]
    assert routes.poll_events() is True
    assert hop.eth[:6] == bytes.fromhex("020000000ffe") and routes.hop(ip("203.0.113.1")) is hop
    assert routes.moved == [hop]  # for the copies of its MAC elsewhere (the fast path's recipes)


def test_a_neighbour_confirmed_with_the_same_mac_has_not_moved(routes):
    routes.hop(ip("203.0.113.1"))
    routes.events.pending = [neigh(A, "192.0.2.254", "02:00:00:00:01:fe", state=NUD_STALE)]
    assert routes.poll_events() is True
    assert routes.moved == []


def test_route_events_change_where_cached_destinations_go(routes):
    assert routes.hop(ip("203.0.113.1")).ifindex == A
    routes.events.pending = [route("203.0.113.0", 24, B, "10.9.0.1")]
    routes.poll_events()
    assert routes.hop(ip("203.0.113.1")).ifindex == B
    routes.events.pending = [route("203.0.113.0", 24, B, "10.9.0.1", event="RTM_DELROUTE")]
    routes.poll_events()
    assert routes.hop(ip("203.0.113.1")).ifindex == A
    routes.events.pending = [route("", 0, A, "192.0.2.254", metric=50, event="RTM_DELROUTE")]
    routes.poll_events()
    assert routes.table.lookup(ip("203.0.113.1")) == Route(A, ip("192.0.2.1"))  # the other default


def test_event_overflow_reads_everything_again(routes):
    routes.events.error = OSError(errno.ENOBUFS, "No buffer space available")
    assert routes.poll_events() is True
    assert routes.reloads == 1 and routes.ipr.dumps == 4  # both families' tables, at start and again
    assert routes.hop(ip("203.0.113.1")).ifindex == A


def test_several_events_in_one_wakeup(routes):
    routes.events.pending = [route("203.0.113.0", 24, B, "10.9.0.1"), neigh(B, "10.9.0.1", "02:00:00:00:09:99")]
    assert routes.poll_events() is True and routes.events.pending == []
    assert routes.hop(ip("203.0.113.1")).eth[:6] == bytes.fromhex("020000000999")


def test_ipv6_destination_has_no_hop_yet(routes):
    assert routes.hop(bytes(15) + b"\x01") is None


def test_ipv6_routes_and_neighbours():
    v6 = socket.AF_INET6
    r = KernelRoutes(INTERFACES, ipr=FakeIPRoute(
        ROUTES + [route("::", 0, A, "fe80::1", family=v6), route("fd00:1::", 64, B, family=v6),
                  route("fd00:1:0:0:8000::", 65, None, rtype=6, family=v6)],
        NEIGHBOURS + [neigh(A, "fe80::1", "02:00:00:00:06:01", family=v6),
                      neigh(B, "fd00:1::11", "02:00:00:00:06:11", family=v6)]),
        events=FakeEvents(), requests=FakeRequests())
    try:
        via_gw = r.hop(socket.inet_pton(v6, "2001:db8::5"))
        assert via_gw.ifindex == A and via_gw.eth[:6] == bytes.fromhex("020000000601")
        assert r.hop(socket.inet_pton(v6, "2001:db8:77::9")) is via_gw  # one shared hop behind the gateway
        on_link = r.hop(socket.inet_pton(v6, "fd00:1::11"))
        assert on_link.ifindex == B and on_link.eth[:6] == bytes.fromhex("020000000611")
        assert r.hop(socket.inet_pton(v6, "fd00:1::8000:0:0:1")) is None  # the blackhole /65 wins
        assert r.hop(ip("10.1.0.11")) is not None  # IPv4 unchanged beside it
        # an unknown on-link neighbour is resolved without waiting, in its own family
        assert r.hop(socket.inet_pton(v6, "fd00:1::12")) is None
        sent = r.requests.sent[-1]
        assert sent[16] == v6 and sent.endswith(socket.inet_pton(v6, "fd00:1::12"))
        r.events.pending = [neigh(B, "fd00:1::12", "02:00:00:00:06:12", family=v6)]
        assert r.poll_events() is True
        assert r.hop(socket.inet_pton(v6, "fd00:1::12")).eth[:6] == bytes.fromhex("020000000612")
    finally:
        r.close()
