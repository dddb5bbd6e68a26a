"""DNS_CHECK: a query over UDP; a reply with our id, QR set and RCODE 0 passes (the answer count
is not looked at, as in keepalived)."""

from __future__ import annotations

import asyncio
import random
import socket
import struct

from pylvs.health.aio import within
from pylvs.health.checks.base import Probe
from pylvs.health.net import describe, make_socket
from pylvs.health.pool import Result
from pylvs.keepalived.model import DnsCheck

QTYPES = {"A": 1, "NS": 2, "CNAME": 5, "SOA": 6, "MX": 15, "TXT": 16, "AAAA": 28}
RCODES = {1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP", 5: "REFUSED"}


def encode_name(name: str) -> bytes:
    labels = [label for label in name.strip(".").split(".") if label]
    return b"".join(bytes([len(lb)]) + lb.encode("idna") for lb in labels) + b"\0"


def query(qid: int, name: str, qtype: str) -> bytes:
    header = struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0)  # RD set, one question
    return header + encode_name(name) + struct.pack("!HH", QTYPES[qtype], 1)


def check_reply(data: bytes, qid: int) -> tuple[bool, str] | None:
    """(ok, why) for a reply to `qid`, None for a datagram that is not one."""
    if len(data) < 12:
        return None
    rid, flags = struct.unpack("!HH", data[:4])
    if rid != qid or not flags & 0x8000:
        return None
    rcode = flags & 0xF
    if rcode:
        return False, f"RCODE {RCODES.get(rcode, rcode)}"
    return True, ""


class DnsProbe(Probe):
    async def run(self, recovering: bool) -> Result:
        cfg = self.cfg
        assert isinstance(cfg, DnsCheck)
        t = self.target
        loop = asyncio.get_running_loop()
        qid = random.getrandbits(16)
        try:
            sock = make_socket(t.ip, socket.SOCK_DGRAM, self.bind)
        except OSError as exc:
            return Result(False, f"DNS_CHECK ({t.label}) failed: {describe(exc)}")
        try:
            await loop.sock_connect(sock, (t.ip, t.port))
            await loop.sock_sendall(sock, query(qid, cfg.name, cfg.type))
            deadline = loop.time() + self.timeout
            while True:
                data = await within(max(0.0, deadline - loop.time()), loop.sock_recv(sock, 4096))
                verdict = check_reply(data, qid)
                if verdict is not None:
                    ok, why = verdict
                    return Result(ok, "" if ok else f"DNS_CHECK ({t.label}) failed: {why}")
        except (OSError, TimeoutError) as exc:
            return Result(False, f"DNS_CHECK ({t.label}) failed: {describe(exc)}")
        finally:
            sock.close()
