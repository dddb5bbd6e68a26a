"""PING_CHECK: one ICMP/ICMPv6 echo. An unprivileged ICMP socket is used when
net.ipv4.ping_group_range allows it, a raw socket otherwise (root)."""

from __future__ import annotations

import asyncio
import itertools
import os
import random
import socket
import struct

from pylvs.health.aio import within
from pylvs.health.checks.base import Probe
from pylvs.health.net import describe, make_socket
from pylvs.health.pool import Result
from pylvs.packet.checksum import checksum

ECHO = {4: (8, 0), 6: (128, 129)}  # (request type, reply type)
_seq = itertools.count(1)


def echo_request(version: int, ident: int, seq: int, payload: bytes) -> bytes:
    kind = ECHO[version][0]
    header = struct.pack("!BBHHH", kind, 0, 0, ident, seq)
    csum = checksum(header + payload) if version == 4 else 0  # the kernel fills the ICMPv6 checksum
    return struct.pack("!BBHHH", kind, 0, csum, ident, seq) + payload


def parse_reply(data: bytes, version: int, raw: bool) -> tuple[int, int, int] | None:
    """(type, ident, seq) of an ICMP message, skipping the IPv4 header a raw socket hands over."""
    if raw and version == 4 and data and data[0] >> 4 == 4:
        data = data[(data[0] & 0x0F) * 4:]
    if len(data) < 8:
        return None
    kind, _code, _csum, ident, seq = struct.unpack("!BBHHH", data[:8])
    return kind, ident, seq


def open_icmp(dst: str, probe: Probe) -> tuple[socket.socket, bool]:
    """(socket, is_raw)."""
    version = 6 if ":" in dst else 4
    proto = socket.IPPROTO_ICMPV6 if version == 6 else socket.IPPROTO_ICMP
    try:
        return make_socket(dst, socket.SOCK_DGRAM, probe.bind, proto), False
    except PermissionError:
        return make_socket(dst, socket.SOCK_RAW, probe.bind, proto), True


class PingProbe(Probe):
    async def run(self, recovering: bool) -> Result:
        t = self.target
        version = 6 if ":" in t.ip else 4
        loop = asyncio.get_running_loop()
        try:
            sock, raw = open_icmp(t.ip, self)
        except OSError as exc:
            return Result(False, f"ICMP CHECK on service {t.label}: cannot open ICMP socket ({describe(exc)}).")
        ident, seq = random.getrandbits(16), next(_seq) & 0xFFFF
        try:
            await loop.sock_sendto(sock, echo_request(version, ident, seq, os.urandom(32)), (t.ip, 0))
            deadline = loop.time() + self.timeout
            while True:
                data, src = await within(max(0.0, deadline - loop.time()), loop.sock_recvfrom(sock, 2048))
                reply = parse_reply(data, version, raw)
                if src[0] != t.ip or reply is None:
                    continue
                kind, rid, rseq = reply
                if kind == ECHO[version][1] and rseq == seq and (rid == ident or not raw):
                    return Result(True)
        except (OSError, TimeoutError) as exc:
            return Result(False, f"ICMP CHECK on service {t.label}: {describe(exc)}.")
        finally:
            sock.close()
