"""Multicast UDP sockets for connection sync, set up like the kernel's make_send_sock/make_receive_sock.

Master: bound to the interface's address, multicast out of that interface with the configured TTL,
no loopback, no DF (a message may be fragmented), connected to group:port. Backup: bound to
group:port on that interface only, member of the group there. Both are non-blocking; `Sender` keeps
what the socket cannot take yet and finishes when the selector says it is writable.

An IPv6 group (`ff02::...`) gets AF_INET6 sockets set up alike (hop limit for the TTL, the source
left to the kernel, as it does: the interface's link-local address for a link-local group); the
interface index scopes the group's address.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import selectors
import socket
import struct
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger(__name__)

SIOCGIFADDR = 0x8915
SIOCGIFMTU = 0x8921
IP_MTU_DISCOVER = 10
IP_PMTUDISC_DONT = 0
IPV6_MTU_DISCOVER = 23
IPV6_PMTUDISC_DONT = 0
BACKLOG_LIMIT = 256  # messages held while the socket buffer is full; the oldest go first


@dataclass
class Link:
    name: str
    index: int
    addr: str  # the primary IPv4 address, "0.0.0.0" if there is none
    mtu: int


def link(name: str) -> Link:
    """The interface a daemon runs on; OSError(ENODEV) if there is no such interface."""
    try:
        index = socket.if_nametoindex(name)
    except OSError:
        raise OSError(errno.ENODEV, "No such device") from None
    request = struct.pack("16s24x", name.encode())  # struct ifreq
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        mtu = struct.unpack_from("i", fcntl.ioctl(s, SIOCGIFMTU, request), 16)[0]
        try:
            addr = socket.inet_ntoa(fcntl.ioctl(s, SIOCGIFADDR, request)[20:24])
        except OSError:
            addr = "0.0.0.0"
    return Link(name, index, addr, mtu)


def _mreqn(group: str, addr: str, index: int) -> bytes:
    return struct.pack("4s4si", socket.inet_aton(group), socket.inet_aton(addr), index)


def sender(iface: Link, group: str, port: int, ttl: int) -> socket.socket:
    if ":" in group:
        return _configured(socket.AF_INET6, lambda sock: _sender6(sock, iface, group, port, ttl))
    if iface.addr == "0.0.0.0":
        log.error("sync: interface %s has no IPv4 address; messages leave without a source", iface.name)
    return _configured(socket.AF_INET, lambda sock: _sender4(sock, iface, group, port, ttl))


def _sender4(sock: socket.socket, iface: Link, group: str, port: int, ttl: int) -> None:
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, _mreqn("0.0.0.0", iface.addr, iface.index))
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 0)
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, ttl)
    sock.setsockopt(socket.IPPROTO_IP, IP_MTU_DISCOVER, IP_PMTUDISC_DONT)
    sock.bind((iface.addr, 0))
    sock.connect((group, port))


def _sender6(sock: socket.socket, iface: Link, group: str, port: int, ttl: int) -> None:
    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, iface.index)
    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_LOOP, 0)
    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, ttl)
    sock.setsockopt(socket.IPPROTO_IPV6, IPV6_MTU_DISCOVER, IPV6_PMTUDISC_DONT)
    sock.connect((group, port, 0, iface.index))


def receiver(iface: Link, group: str, port: int) -> socket.socket:
    def setup(sock: socket.socket) -> None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, iface.name.encode())
        if ":" in group:
            sock.bind((group, port, 0, iface.index))
            mreq = socket.inet_pton(socket.AF_INET6, group) + struct.pack("@I", iface.index)  # struct ipv6_mreq
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP, mreq)
        else:
            sock.bind((group, port))
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, _mreqn(group, "0.0.0.0", iface.index))

    return _configured(socket.AF_INET6 if ":" in group else socket.AF_INET, setup)


def _configured(family: int, setup: Callable[[socket.socket], None]) -> socket.socket:
    """A non-blocking UDP socket after `setup`, closed if setting it up fails."""
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        setup(sock)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


class Sender:
    """Sends whole messages without ever blocking the loop."""

    def __init__(self, sock: socket.socket, selector: selectors.BaseSelector) -> None:
        self.sock = sock
        self.selector = selector
        self.backlog: deque[bytes] = deque()
        self.dropped = 0
        self.errors = 0

    def send(self, message: bytes) -> None:
        if self.backlog:
            self._hold(message)
            return
        try:
            self.sock.send(message)
        except BlockingIOError:
            self._hold(message)
            self.selector.register(self.sock, selectors.EVENT_WRITE, self._writable)
        except OSError as exc:  # the link went down, for one: sync is best effort, as in the kernel
            self.errors += 1
            if self.errors <= 10:
                log.warning("sync: sending failed: %s", exc)

    def _hold(self, message: bytes) -> None:
        if len(self.backlog) >= BACKLOG_LIMIT:
            self.backlog.popleft()
            self.dropped += 1
        self.backlog.append(message)

    def _writable(self, fd: int, events: int) -> None:
        while self.backlog:
            try:
                self.sock.send(self.backlog[0])
            except BlockingIOError:
                return
            except OSError:
                self.errors += 1
            self.backlog.popleft()
        self.selector.unregister(self.sock)

    def close(self) -> None:
        if self.backlog:
            self.selector.unregister(self.sock)
            self.backlog.clear()
        self.sock.close()
