"""How a FULLNAT real server learns the client's address: the TOA TCP option or a PROXY protocol header.

TOA (kind 254, length 8: client port and IPv4 address, as Alibaba LVS and DPVS; length 20 with an
IPv6 address, as DPVS) goes into the client's first ACK; a TCP stack without the toa module skips the
unknown option. The PROXY protocol header (v1 text or v2 binary, as DPVS offers) goes in front of
the client's first data; from then on client sequence numbers are shifted up by its length and the
server's acknowledgements (and SACK edges) down, and the MSS the server announces is lowered by as much
so that the first segment still fits the path.
"""

from __future__ import annotations

import socket
import struct

from pylvs.engine.egress import Buffer
from pylvs.packet.layout import IP, IP_TOTLEN

IPV6_PLEN = 4

TOA_KIND = 254
PP2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
SEQ_MASK = 0xFFFFFFFF


def toa(caddr: bytes, cport: bytes) -> bytes:
    return bytes((TOA_KIND, 4 + len(caddr))) + cport + caddr


def proxy_header(version: str, caddr: bytes, cport: bytes, vaddr: bytes, vport: bytes) -> bytes:
    v6 = len(caddr) == 16
    if version == "v1":
        family = socket.AF_INET6 if v6 else socket.AF_INET
        return (f"PROXY TCP{6 if v6 else 4} {socket.inet_ntop(family, caddr)} {socket.inet_ntop(family, vaddr)} "
                f"{int.from_bytes(cport, 'big')} {int.from_bytes(vport, 'big')}\r\n").encode()
    # v2: signature, PROXY command, TCP over IPv4 (12 address bytes) or IPv6 (36)
    return (PP2_SIGNATURE + struct.pack("!BBH", 0x21, 0x21 if v6 else 0x11, 36 if v6 else 12)
            + caddr + vaddr + cport + vport)


def seq_after_eq(a: int, b: int) -> bool:
    return ((a - b) & SEQ_MASK) < 0x80000000


def insert(buf: Buffer, at: int, end: int, data: bytes) -> bytearray:
    """A copy of buf[:end] with `data` inserted at `at` and the IP total length (IPv6: payload length)
    grown to match."""
    out = bytearray(buf[:at])
    out += data
    out += buf[at:end]
    o = IP + (IPV6_PLEN if out[IP] >> 4 == 6 else IP_TOTLEN)
    out[o:o + 2] = ((out[o] << 8 | out[o + 1]) + len(data)).to_bytes(2, "big")
    return out


def insert_option(buf: Buffer, l4: int, end: int, option: bytes) -> bytearray | None:
    """Insert a TCP option right after the fixed header; None if the options would exceed 40 bytes."""
    doff = buf[l4 + 12] >> 4
    if doff * 4 + len(option) > 60 or len(option) % 4:
        return None
    out = insert(buf, l4 + 20, end, option)
    out[l4 + 12] = ((doff + len(option) // 4) << 4) | (out[l4 + 12] & 0x0F)
    return out


def tcp_options(buf: Buffer, l4: int):
    """(offset, kind, length) of each option of the TCP header at l4."""
    end = l4 + (buf[l4 + 12] >> 4) * 4
    i = l4 + 20
    while i < end:
        kind = buf[i]
        if kind == 0:
            return
        if kind == 1:
            i += 1
            continue
        if i + 1 >= end or buf[i + 1] < 2:
            return
        yield i, kind, buf[i + 1]
        i += buf[i + 1]
