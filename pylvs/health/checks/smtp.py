"""SMTP_CHECK: expect a 220 greeting, send HELO, expect 250, send QUIT."""

from __future__ import annotations

import asyncio

from pylvs.health.aio import within
from pylvs.health.checks.base import Probe
from pylvs.health.net import close_stream, describe, open_stream
from pylvs.health.pool import Result
from pylvs.keepalived.model import SmtpCheck


async def read_reply(reader: asyncio.StreamReader, timeout: float) -> int:
    """The code of one (possibly multi-line) SMTP reply."""
    while True:
        line = await within(timeout, reader.readline())
        if not line:
            raise ConnectionError("connection closed")
        if len(line) < 4 or not line[:3].isdigit():
            raise ValueError(f"bad reply {line[:40]!r}")
        if line[3:4] != b"-":
            return int(line[:3])


class SmtpProbe(Probe):
    async def run(self, recovering: bool) -> Result:
        cfg = self.cfg
        assert isinstance(cfg, SmtpCheck)
        t, timeout = self.target, self.timeout
        try:
            reader, writer = await open_stream(t.ip, t.port, self.bind, timeout)
        except (TimeoutError, OSError) as exc:
            return Result(False, f"SMTP connection to {t.label} failed ({describe(exc)}).")
        try:
            for send, expect in ((None, 220), (f"HELO {cfg.helo_name}\r\n", 250), ("QUIT\r\n", None)):
                if send:
                    writer.write(send.encode())
                    await within(timeout, writer.drain())
                if expect is not None:
                    code = await read_reply(reader, timeout)
                    if code != expect:
                        return Result(False, f"SMTP_CHECK {t.label}: expected {expect}, got {code}.")
            return Result(True)
        except (TimeoutError, OSError, ValueError) as exc:
            return Result(False, f"SMTP_CHECK {t.label}: {describe(exc)}.")
        finally:
            await close_stream(writer)
