"""Userspace decapsulation for hosts whose kernel has no ipip/gre/fou modules.

The director's tunneled packets arrive on a raw socket (IPPROTO_IPIP, IPPROTO_GRE) or a UDP socket
(GUE). Once a raw socket has taken a packet of a protocol the kernel has no handler for, the kernel
drops it quietly instead of answering ICMP protocol-unreachable; a bound UDP socket likewise keeps
port-unreachable away. The inner packet, if addressed to one of our VIPs, is written to a TUN
device and so enters the stack as received there: the local server answers the client directly.
"""

from __future__ import annotations

import errno
import logging
import os
import selectors
import signal
import socket
from collections import Counter
from collections.abc import Iterable

from pylvs.packet import checksum
from pylvs.rs import net, sysctl
from pylvs.rs.tundev import open_tun

log = logging.getLogger(__name__)

KINDS = ("ipip", "gue", "gre")
PROTO = {"ipip": socket.IPPROTO_IPIP, "gre": socket.IPPROTO_GRE}
GRE_C, GRE_R, GRE_K, GRE_S = 0x8000, 0x4000, 0x2000, 0x1000
GRE_VERSION = 0x0007
ETH_P_IP = 0x0800
GUE_PROTO_IPIP = 4


def strip_ip(data: bytes | memoryview) -> memoryview | None:
    """The payload of an IPv4 packet as a raw socket delivers it (header included), else None."""
    if len(data) < 20 or data[0] >> 4 != 4:
        return None
    ihl = (data[0] & 0x0F) << 2
    return memoryview(data)[ihl:] if ihl >= 20 and len(data) >= ihl else None


def gre_payload(gre: memoryview) -> tuple[memoryview | None, str]:
    """The IPv4 packet inside a GRE header (RFC 2784/2890), and why not if there is none."""
    if len(gre) < 4:
        return None, "short"
    flags = gre[0] << 8 | gre[1]
    if flags & (GRE_R | GRE_VERSION):
        return None, "gre_unsupported"
    if (gre[2] << 8 | gre[3]) != ETH_P_IP:
        return None, "not_ipv4"
    off = 4 + 4 * sum(bool(flags & bit) for bit in (GRE_C, GRE_K, GRE_S))
    if len(gre) < off:
        return None, "short"
    if flags & GRE_C and checksum.ones_sum(gre) != 0xFFFF:
        return None, "bad_checksum"
    return gre[off:], ""


def gue_payload(udp_payload: memoryview) -> tuple[memoryview | None, str]:
    """The IPv4 packet inside GUE: version 0 with proto_ctype 4, or version 1 (direct IPv4)."""
    if len(udp_payload) < 4:
        return None, "short"
    first = udp_payload[0]
    version = first >> 6
    if version == 1:  # GUE variant 1: the IP header itself, its first nibble telling 4 or 6
        return (udp_payload, "") if first >> 4 == 4 else (None, "not_ipv4")
    if version != 0 or first & 0x20:
        return None, "gue_control"  # control messages (C bit) carry no packet
    off = 4 + 4 * (first & 0x1F)
    if udp_payload[1] != GUE_PROTO_IPIP:
        return None, "not_ipv4"
    if len(udp_payload) < off:
        return None, "short"
    return udp_payload[off:], ""


def inner_for(kind: str, data: bytes | memoryview, vips: set[bytes]) -> tuple[memoryview | None, str]:
    """The inner packet to inject for one received datagram, or (None, reason)."""
    if kind == "gue":
        inner, why = gue_payload(memoryview(data))
    else:
        payload = strip_ip(data)
        if payload is None:
            return None, "malformed"
        inner, why = (payload, "") if kind == "ipip" else gre_payload(payload)
    if inner is None:
        return None, why
    if len(inner) < 20 or inner[0] >> 4 != 4:
        return None, "not_ipv4"
    total = inner[2] << 8 | inner[3]
    if total < 20 or total > len(inner):
        return None, "malformed"
    if bytes(inner[16:20]) not in vips:
        return None, "not_vip"  # never a relay into this host for other destinations
    return inner[:total], ""


def open_socket(kind: str, port: int = 0) -> socket.socket:
    if kind == "gue":
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("0.0.0.0", port))
    else:
        sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, PROTO[kind])
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    sock.setblocking(False)
    return sock


def prepare_device(name: str) -> None:
    """Bring the TUN device up, loose on rp_filter (the client is routed elsewhere), no IPv6 chatter."""
    v6 = f"/proc/sys/net/ipv6/conf/{name}/disable_ipv6"
    if os.path.exists(v6):
        with open(v6, "w") as f:
            f.write("1\n")
    sysctl.put(name, "rp_filter", 0)
    net.set_up(name)


class Decapsulator:
    def __init__(self, kind: str, vips: Iterable[str], dev: str, port: int = 0) -> None:
        if kind not in KINDS:
            raise ValueError(f"unknown tunnel type {kind}")
        self.kind = kind
        self.vips = {socket.inet_aton(v) for v in vips}
        self.counts: Counter[str] = Counter()
        self.stopping = False
        self.fd, self.dev = open_tun(dev)
        try:
            prepare_device(self.dev)
            self.sock = open_socket(kind, port)
        except BaseException:
            os.close(self.fd)
            raise

    def handle(self, data: bytes) -> None:
        inner, why = inner_for(self.kind, data, self.vips)
        if inner is None:
            self.counts[why] += 1
            return
        try:
            os.write(self.fd, inner)
            self.counts["injected"] += 1
        except OSError as exc:
            self.counts["inject_error"] += 1
            if exc.errno not in (errno.EAGAIN, errno.ENOBUFS):
                log.warning("TUN write failed: %s", exc)

    def run(self) -> None:
        # A signal writes to the wake-up socket, so select returns at once (PEP 475 would retry).
        wake_r, wake_w = socket.socketpair()
        wake_r.setblocking(False)
        wake_w.setblocking(False)
        old_fd = signal.set_wakeup_fd(wake_w.fileno())
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._stop)
        sel = selectors.DefaultSelector()
        sel.register(self.sock, selectors.EVENT_READ)
        sel.register(wake_r, selectors.EVENT_READ)
        recv = self.sock.recv
        try:
            self._loop(sel, recv)
        finally:
            signal.set_wakeup_fd(old_fd)
            sel.close()
            wake_r.close()
            wake_w.close()

    def _loop(self, sel: selectors.BaseSelector, recv) -> None:
        while not self.stopping:
            if not sel.select(5.0):
                continue
            while True:  # drain: one wake-up, many packets
                try:
                    data = recv(65535)
                except BlockingIOError:
                    break
                except InterruptedError:
                    continue
                self.handle(data)

    def _stop(self, *_: object) -> None:
        self.stopping = True

    def close(self) -> None:
        self.sock.close()
        os.close(self.fd)
