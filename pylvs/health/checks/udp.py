"""UDP_CHECK: send a datagram. Without require_reply a silent server passes and only an ICMP
error (port/host/net unreachable) fails; with it a reply of the right length, starting with
the pattern (hex, X = any nibble), is needed."""

from __future__ import annotations

import asyncio
import os
import socket

from pylvs.health.aio import within
from pylvs.health.checks.base import Probe
from pylvs.health.net import describe, make_socket
from pylvs.health.pool import Result
from pylvs.keepalived.model import UdpCheck


def matches(reply: bytes, pattern: str) -> bool:
    got = reply.hex()
    for i, want in enumerate(pattern.lower()):
        if want == "x":
            continue
        if i >= len(got) or got[i] != want:
            return False
    return True


class UdpProbe(Probe):
    async def run(self, recovering: bool) -> Result:
        cfg = self.cfg
        assert isinstance(cfg, UdpCheck)
        t = self.target
        loop = asyncio.get_running_loop()
        try:
            sock = make_socket(t.ip, socket.SOCK_DGRAM, self.bind)
        except OSError as exc:
            return Result(False, f"UDP_CHECK on service {t.label} failed ({describe(exc)}).")
        try:
            await loop.sock_connect(sock, (t.ip, t.port))
            await loop.sock_sendall(sock, cfg.payload if cfg.payload is not None else os.urandom(16))
            reply = await within(self.timeout, loop.sock_recv(sock, 65535))
        except TimeoutError:
            if cfg.require_reply:
                return Result(False, f"UDP_CHECK on service {t.label} failed (no reply).")
            return Result(True)
        except OSError as exc:
            return Result(False, f"UDP_CHECK on service {t.label} failed ({describe(exc)}).")
        finally:
            sock.close()
        if cfg.require_reply:
            if not cfg.min_reply_length <= len(reply) <= cfg.max_reply_length:
                return Result(False, f"UDP_CHECK on service {t.label} failed (reply length {len(reply)}).")
            if cfg.reply_pattern and not matches(reply, cfg.reply_pattern):
                return Result(False, f"UDP_CHECK on service {t.label} failed (reply does not match).")
        return Result(True)
