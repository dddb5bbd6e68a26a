"""Userspace decapsulation for hosts whose kernel has no ipip/gre/fou modules.

The director's tunneled packets are read from a link-level socket with their offload state
(capture.py): unfinished checksums and GSO super-frames, as the director's kernel fast path and GRO
leave them, are handed on as such (offload.py); outer fragments come reassembled. The raw socket
(IPPROTO_IPIP, IPPROTO_GRE) or UDP socket (GUE) stays open: once it has taken a packet of a protocol
the kernel has no handler for, the kernel drops it quietly instead of answering ICMP
protocol-unreachable (a bound UDP socket likewise keeps port-unreachable away). The inner packet,
if addressed to one of our VIPs, is written to a TUN device and so enters the stack as received
there: the local server answers the client directly.
The link-level socket sees packets before the host's firewall (netfilter INPUT) does.
"""

from __future__ import annotations

import errno
import logging
import os
import selectors
import signal
import socket
import struct
import time
from collections import Counter
from collections.abc import Container, Iterable

from pylvs.packet import checksum, vnet
from pylvs.rs import capture, decap6, net, offload, sysctl
from pylvs.rs.tundev import open_tun

log = logging.getLogger(__name__)

KINDS = ("ipip", "gue", "gre")
PROTO = {"ipip": socket.IPPROTO_IPIP, "gre": socket.IPPROTO_GRE}
GRE_C, GRE_R, GRE_K, GRE_S = 0x8000, 0x4000, 0x2000, 0x1000
GRE_VERSION = 0x0007
ETH_P_IP = 0x0800
GUE_PROTO_IPIP = 4
GUE_PROTO_IPV6 = 41
_HEADER20 = struct.Struct("!10H")


def ip_header_len(data: bytes | memoryview) -> int:
    """The header length of an IPv4 packet, or 0 if `data` does not start with one."""
    if len(data) < 20 or data[0] >> 4 != 4:
        return 0
    ihl = (data[0] & 0x0F) << 2
    return ihl if ihl >= 20 and len(data) >= ihl else 0


def gre_offset(gre: memoryview, verify: bool = True, ethertype: int = ETH_P_IP) -> tuple[int, str]:
    """Where the IPv4 (or `ethertype`'s) packet starts inside a GRE header (RFC 2784/2890), or (-1, why not)."""
    if len(gre) < 4:
        return -1, "short"
    flags = gre[0] << 8 | gre[1]
    if flags & (GRE_R | GRE_VERSION):
        return -1, "gre_unsupported"
    if (gre[2] << 8 | gre[3]) != ethertype:
        return -1, "not_ipv4" if ethertype == ETH_P_IP else "other_protocol"
    off = 4 + 4 * sum(bool(flags & bit) for bit in (GRE_C, GRE_K, GRE_S))
    if len(gre) < off:
        return -1, "short"
    if verify and flags & GRE_C and checksum.ones_sum(gre) != 0xFFFF:
        return -1, "bad_checksum"
    return off, ""


def gue_offset(udp_payload: memoryview, ip_version: int = 4) -> tuple[int, str]:
    """Where the IPv4 (or IPv6) packet starts inside GUE: version 0 with proto_ctype 4 (41), or version 1
    (the IP header directly)."""
    if len(udp_payload) < 4:
        return -1, "short"
    first = udp_payload[0]
    version = first >> 6
    wrong = "not_ipv4" if ip_version == 4 else "other_protocol"
    if version == 1:  # GUE variant 1: the IP header itself, its first nibble telling 4 or 6
        return (0, "") if first >> 4 == ip_version else (-1, wrong)
    if version != 0 or first & 0x20:
        return -1, "gue_control"  # control messages (C bit) carry no packet
    off = 4 + 4 * (first & 0x1F)
    if udp_payload[1] != (GUE_PROTO_IPIP if ip_version == 4 else GUE_PROTO_IPV6):
        return -1, wrong
    if len(udp_payload) < off:
        return -1, "short"
    return off, ""


def inner_end(data: memoryview, start: int, vips: set[bytes]) -> tuple[int, str]:
    """The end of the inner IPv4 packet at `start` if it is one for our VIPs, else (-1, why not)."""
    inner = data[start:]
    if len(inner) < 20 or inner[0] >> 4 != 4:
        return -1, "not_ipv4"
    total = inner[2] << 8 | inner[3]
    if total < 20 or total > len(inner):
        return -1, "malformed"
    if bytes(inner[16:20]) not in vips:
        return -1, "not_vip"  # never a relay into this host for other destinations
    return start + total, ""


def inner_span(kind: str, data: memoryview, at: int, vips: set[bytes], verify: bool = True) -> tuple[int, int, str]:
    """(start, end) of the inner packet whose tunnel header (ipip: the packet itself) is at `at`,
    or (-1, -1, why not); `verify` checks a GRE checksum."""
    if kind == "ipip":
        off, why = 0, ""
    elif kind == "gre":
        off, why = gre_offset(data[at:], verify)
    else:
        off, why = gue_offset(data[at:])
    if off < 0:
        return -1, -1, why
    end, why = inner_end(data, at + off, vips)
    return (at + off, end, "") if end >= 0 else (-1, -1, why)


def header_sum_ok(packet: memoryview, ihl: int) -> bool:
    """The IPv4 header checksum verifies (words summed by struct: this runs for every packet)."""
    words = _HEADER20.unpack_from(packet) if ihl == 20 else struct.unpack_from(f"!{ihl >> 1}H", packet)
    return checksum.fold(sum(words)) == 0xFFFF


def outer_span(kind: str, packet: memoryview, port: int, partial: bool) -> tuple[int, int, str]:
    """Check an outer IPv4 packet as the kernel would before delivering it to a tunnel: (where its
    tunnel header starts, its length) or (-1, -1, why not). A packet with a partial checksum has not
    crossed a wire unchecked (it comes from a local stack or GRO): its tunnel checksum is not verified."""
    ihl = ip_header_len(packet)
    if not ihl:
        return -1, -1, "malformed"
    total = packet[2] << 8 | packet[3]
    if total < ihl or total > len(packet) or not header_sum_ok(packet, ihl):
        return -1, -1, "bad_outer"
    if (packet[6] << 8 | packet[7]) & 0x3FFF:
        return -1, -1, "fragment"  # only before the socket joined its defragmenting fanout group
    if packet[9] != (socket.IPPROTO_UDP if kind == "gue" else PROTO[kind]):
        return -1, -1, "other_protocol"
    if kind != "gue":
        return ihl, total, ""
    udp = packet[ihl:total]
    if len(udp) < 8 or (udp[2] << 8 | udp[3]) != port:
        return -1, -1, "other_port"
    length = udp[4] << 8 | udp[5]
    if length < 8 or length > len(udp):
        return -1, -1, "malformed"
    if not partial and (udp[6] or udp[7]):
        pseudo = checksum.pseudo_header_sum(bytes(packet[12:16]), bytes(packet[16:20]), socket.IPPROTO_UDP, length)
        if checksum.fold(checksum.ones_sum(udp[:length]) + pseudo) != 0xFFFF:
            return -1, -1, "bad_checksum"
    return ihl + 8, ihl + length, ""


def from_link(kind: str, frame: memoryview, hatype: int, port: int, vips: set[bytes],
              local: Container[bytes]) -> tuple[bytes | None, memoryview | None, str]:
    """What to write to the TUN device for a frame of the link-level socket (its virtio_net_hdr, the
    link header, the outer packet): (virtio_net_hdr, inner packet, "") or (None, None, why not)."""
    link = capture.link_header_len(hatype, frame[vnet.VNET_HDR_LEN:]) if len(frame) > vnet.VNET_HDR_LEN else -1
    if link < 0:
        return None, None, "not_ours"
    hdr = vnet.unpack(frame)
    packet = frame[vnet.VNET_HDR_LEN + link:]
    partial = bool(hdr[0] & vnet.F_NEEDS_CSUM)
    at, total, why = outer_span(kind, packet, port, partial)
    if at >= 0 and bytes(packet[16:20]) not in local:
        why = "not_local"  # the kernel would forward it (or drop it), not decapsulate it
    if why:
        return None, None, why
    start, end, why = inner_span(kind, packet[:total], at, vips, verify=not partial)
    if why:
        return None, None, why
    header, why = offload.inner_header(hdr, link + start, packet[start:end])  # csum_start counts the link header
    return (header, packet[start:end], "") if header is not None else (None, None, why)


class LocalAddresses:
    """This host's IPv4 (or IPv6) addresses, read again (at most once a second) when one is not known."""

    def __init__(self, clock=time.monotonic, version: int = 4) -> None:
        self.clock = clock
        self.version = version
        self.known: set[bytes] = set()
        self.read_at = -1.0

    def __contains__(self, addr: bytes) -> bool:
        if addr in self.known:
            return True
        if self.clock() - self.read_at >= 1.0 or self.read_at < 0:
            self.read_at = self.clock()
            if self.version == 6:
                self.known = {socket.inet_pton(socket.AF_INET6, a) for a in net.local_addresses(6)}
            else:
                self.known = {socket.inet_aton(a) for a in net.local_addresses()}
        return addr in self.known


def prepare_device(name: str, ipv6: bool = False) -> None:
    """Bring the TUN device up, loose on rp_filter (the client is routed elsewhere), no IPv6 chatter
    unless IPv6 VIPs are decapsulated into it."""
    v6 = f"/proc/sys/net/ipv6/conf/{name}/disable_ipv6"
    if os.path.exists(v6):
        with open(v6, "w") as f:
            f.write("0\n" if ipv6 else "1\n")
    sysctl.put(name, "rp_filter", 0)
    net.set_up(name)


class Decapsulator:
    def __init__(self, kind: str, vips: Iterable[str], dev: str, port: int = 0) -> None:
        if kind not in KINDS:
            raise ValueError(f"unknown tunnel type {kind}")
        self.kind = kind
        self.port = port
        vips = list(vips)
        self.vips = {socket.inet_aton(v) for v in vips if ":" not in v}
        self.vips6 = {socket.inet_pton(socket.AF_INET6, v) for v in vips if ":" in v}

        self.local = LocalAddresses()
        self.local6 = LocalAddresses(version=6)
        self.link6: socket.socket | None = None
        self.sock6: socket.socket | None = None
        self.counts: Counter[str] = Counter()
        self.stopping = False
        self.report_due = False
        self.buf = bytearray(capture.MAX_PACKET)
        self.view = memoryview(self.buf)
        self.fd, self.dev = open_tun(dev, vnet_hdr=True)
        self.link: socket.socket | None = None
        self.sock: socket.socket | None = None
        try:
            prepare_device(self.dev, ipv6=bool(self.vips6))
            self.sock = capture.open_protocol_socket(kind, port)
            self.link = capture.open_link_socket(socket.IPPROTO_UDP if kind == "gue" else PROTO[kind], port)
            if self.vips6:
                self.sock6 = decap6.open_protocol_socket6(kind, port)
                self.link6 = decap6.open_link_socket6(kind, port)
        except BaseException:
            self.close()
            raise

    def handle_frame(self, frame: memoryview, hatype: int = capture.ARPHRD_ETHER, ifname: str = "",
                     pkttype: int = capture.PACKET_HOST) -> None:
        """A frame from the link-level socket (see from_link)."""
        if pkttype != capture.PACKET_HOST or ifname == self.dev:
            self.counts["not_ours"] += 1
            return
        header, inner, why = from_link(self.kind, frame, hatype, self.port, self.vips, self.local)
        if header is None:
            self.counts[why] += 1
            return
        if header[0] & vnet.F_NEEDS_CSUM:
            self.counts["partial"] += 1
        if header[1] != vnet.GSO_NONE:
            self.counts["gso"] += 1
        self.inject(header, inner)

    def handle_frame6(self, frame: memoryview, hatype: int = capture.ARPHRD_ETHER, ifname: str = "",
                      pkttype: int = capture.PACKET_HOST) -> None:
        """A frame from the IPv6 link-level socket (decap6.from_link6)."""
        if pkttype != capture.PACKET_HOST or ifname == self.dev:
            self.counts["not_ours"] += 1
            return
        header, inner, why = decap6.from_link6(frame, hatype, self.vips6, self.local6, self.kind, self.port)
        if header is None:
            self.counts[why] += 1
            return
        self.inject(header, inner)

    def inject(self, header: bytes, inner: memoryview) -> None:
        try:
            os.writev(self.fd, (header, inner))
            self.counts["injected"] += 1
        except OSError as exc:
            self.counts["inject_error"] += 1
            n = self.counts["inject_error"]
            if exc.errno not in (errno.EAGAIN, errno.ENOBUFS) and not n & (n - 1):  # 1st, 2nd, 4th...
                log.warning("TUN write failed (%d so far): %s", n, exc)

    def run(self) -> None:
        # A signal writes to the wake-up socket, so select returns at once (PEP 475 would retry).
        wake_r, wake_w = socket.socketpair()
        wake_r.setblocking(False)
        wake_w.setblocking(False)
        old_fd = signal.set_wakeup_fd(wake_w.fileno())
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._stop)
        signal.signal(signal.SIGUSR1, self._report)
        sel = selectors.DefaultSelector()
        sel.register(self.link, selectors.EVENT_READ, self._drain_link)
        if self.link6 is not None:
            sel.register(self.link6, selectors.EVENT_READ, self._drain_link)
        if self.kind == "gue":
            sel.register(self.sock, selectors.EVENT_READ, self._discard)
            if self.sock6 is not None:
                sel.register(self.sock6, selectors.EVENT_READ, self._discard)
        sel.register(wake_r, selectors.EVENT_READ, self._discard)
        try:
            while not self.stopping:
                for key, _ in sel.select(5.0):
                    key.data(key.fileobj)
                if self.report_due:
                    self.report_due = False
                    log.info("counts: %s", dict(self.counts))
        finally:
            signal.set_wakeup_fd(old_fd)
            sel.close()
            wake_r.close()
            wake_w.close()

    def _drain_link(self, sock: socket.socket) -> None:
        recv, buf, view = sock.recvfrom_into, self.buf, self.view
        handle = self.handle_frame6 if sock is self.link6 else self.handle_frame
        while True:  # drain: one wake-up, many packets
            try:
                n, addr = recv(buf, 0, socket.MSG_TRUNC)
            except BlockingIOError:
                return
            except InterruptedError:
                continue
            if n > len(buf):
                self.counts["too_big"] += 1
                continue
            handle(view[:n], addr[3], addr[0], addr[2])

    def _discard(self, sock: socket.socket) -> None:
        """Empty the GUE socket (its packets came in through the link-level socket) or the wake-up one."""
        recv_into, buf = sock.recv_into, self.view[:2048]
        while True:
            try:
                recv_into(buf)
            except BlockingIOError:
                return
            except InterruptedError:
                continue

    def _stop(self, *_: object) -> None:
        self.stopping = True

    def _report(self, *_: object) -> None:
        self.report_due = True  # SIGUSR1: log the counters

    def close(self) -> None:
        for sock in (self.link, self.sock, self.link6, self.sock6):
            if sock is not None:
                sock.close()
        os.close(self.fd)
