"""Sync messages on the wire, as the kernel's ip_vs_sync.c sends and reads them (ipvs.md §5).

Version 1 (the kernel's default)::

    header  8 B: u8 0 | u8 syncid | be16 size | u8 nr_conns | s8 version=1 | u16 0
    conn   36 B: u8 type | u8 protocol | be16 ver_size | be32 flags | be16 state | be16 cport, vport, dport
                 | be32 fwmark | be32 timeout | be32 caddr, vaddr, daddr      (IPv6: 72 B, 16-byte addresses)
                 then options [u8 type, u8 len, data], the whole conn padded to 4 bytes

Version 0 (legacy, IPv4 only)::

    header  4 B: u8 nr_conns | u8 syncid | be16 size
    conn   24 B: u8 0 | u8 protocol | be16 cport, vport, dport | be32 caddr, vaddr, daddr | be16 flags | be16 state
                 + 24 B sequence data when flags has IN_SEQ or OUT_SEQ

Ports and addresses stay in network byte order (`bytes`), as the engine keeps them. `decode` reads
both versions, as a version-1 kernel does, and never raises: a message it cannot trust comes back
as a `Rejected` with the reason, for the caller to count.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from pylvs.ipvs_uapi import (
    CONN_F_FWD_MASK,
    CONN_F_HASHED,
    CONN_F_IN_SEQ,
    CONN_F_INACTIVE,
    CONN_F_NO_CPORT,
    CONN_F_NOOUTPUT,
    CONN_F_SEQ_MASK,
    CONN_F_TEMPLATE,
)

SYNC_GROUP = "224.0.0.81"
SYNC_PORT = 8848
SYNC_VERSION = 1

# What a backup takes from a message for a new connection, and for one it has already.
BACKUP_MASK = (CONN_F_FWD_MASK | CONN_F_NOOUTPUT | CONN_F_INACTIVE | CONN_F_SEQ_MASK | CONN_F_NO_CPORT
               | CONN_F_TEMPLATE)
BACKUP_UPD_MASK = CONN_F_INACTIVE | CONN_F_SEQ_MASK

# Template states (IP_VS_CTPL_S_*)
TEMPLATE_NONE, TEMPLATE_ASSURED = 0, 1

OPT_SEQ_DATA, OPT_PE_DATA, OPT_PE_NAME = 1, 2, 3
OPT_F_PARAM = 0x40  # an option type with this bit may be skipped by a receiver that does not know it
PE_DATA_MAX, PE_NAME_MAX = 255, 16
STYPE_F_INET6 = 0x01
SVER_SHIFT, SVER_MASK = 12, 0x0FFF

HEADER_V1 = struct.Struct("!BBHBbH")
HEADER_V0 = struct.Struct("!BBH")
CONN_V4 = struct.Struct("!BBHIH2s2s2sII4s4s4s")
CONN_V6 = struct.Struct("!BBHIH2s2s2sII16s16s16s")
CONN_V0 = struct.Struct("!xB2s2s2s4s4s4sHH")
SEQ_DATA = struct.Struct("!6I")  # in_seq then out_seq: init_seq, delta, previous_delta each


@dataclass(slots=True)
class SyncConn:
    """One connection (or persistence template) as a sync message carries it."""

    protocol: int
    caddr: bytes
    cport: bytes
    vaddr: bytes
    vport: bytes
    daddr: bytes
    dport: bytes
    flags: int = CONN_F_INACTIVE
    state: int = 0
    fwmark: int = 0
    timeout: int = 0  # seconds; 0 in version 0, where the backup uses the state's default
    ipv6: bool = False
    seq: tuple[int, int, int, int, int, int] | None = None
    pe_data: bytes = b""
    pe_name: bytes = b""
    unknown_param: int = 0  # a mandatory option type we do not know: the backup skips the connection

    @property
    def template(self) -> bool:
        return bool(self.flags & CONN_F_TEMPLATE)


@dataclass(slots=True)
class Message:
    version: int
    syncid: int
    conns: list[SyncConn] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Rejected:
    """A message dropped as a whole; `reason` is a short counter name."""

    reason: str


class _Bad(Exception):
    """Internal: why a message is rejected; never leaves this module."""


# -- encoding -----------------------------------------------------------------------------------

def pe_options(pe_data: bytes, pe_name: bytes) -> bytes:
    """A persistence engine's data and name as sync options (none without data)."""
    if not pe_data:
        return b""
    name = bytes((OPT_PE_NAME, len(pe_name))) + pe_name if pe_name else b""
    return bytes((OPT_PE_DATA, len(pe_data))) + pe_data + name


def pack_v1(protocol: int, flags: int, state: int, cport: bytes, vport: bytes, dport: bytes, fwmark: int,
            timeout: int, caddr: bytes, vaddr: bytes, daddr: bytes,
            pe_name: bytes = b"", pe_data: bytes = b"") -> bytes:
    """A version-1 connection (IPv6 ones, 16-byte addresses, in the kernel's IPv6 layout: type
    STYPE_F_INET6, 72 bytes), with a template's persistence-engine options when it has them (no
    sequence data: pylvs has no application helpers), padded so that the next one starts aligned."""
    flags &= ~(CONN_F_HASHED | CONN_F_SEQ_MASK)
    layout, stype = (CONN_V6, STYPE_F_INET6) if len(caddr) == 16 else (CONN_V4, 0)
    options = pe_options(pe_data, pe_name)
    size = layout.size + len(options)
    return layout.pack(stype, protocol, size, flags, state, cport, vport, dport, fwmark, timeout,
                       caddr, vaddr, daddr) + options + bytes(-size & 3)


def pack_v0(protocol: int, flags: int, state: int, cport: bytes, vport: bytes, dport: bytes,
            caddr: bytes, vaddr: bytes, daddr: bytes) -> bytes:
    """A version-0 connection without sequence data (version 0 has 16-bit flags, no fwmark, no timeout)."""
    flags16 = flags & 0xFFFF & ~(CONN_F_HASHED | CONN_F_SEQ_MASK)
    return CONN_V0.pack(protocol, cport, vport, dport, caddr, vaddr, daddr, flags16, state)


def header(version: int, syncid: int, nr_conns: int, size: int) -> bytes:
    if version == 0:
        return HEADER_V0.pack(nr_conns, syncid, size)
    return HEADER_V1.pack(0, syncid, size, nr_conns, SYNC_VERSION, 0)


def header_size(version: int) -> int:
    return HEADER_V0.size if version == 0 else HEADER_V1.size


def encode_conn(c: SyncConn, version: int = SYNC_VERSION) -> bytes:
    """Any connection, with its options (sequence data, persistence-engine data and name)."""
    if version == 0:
        if c.ipv6:
            raise ValueError("version 0 carries IPv4 connections only")
        flags = c.flags & 0xFFFF & ~CONN_F_HASHED
        # In version 0 the sequence flags say whether sequence data follows.
        if c.seq is None:
            flags &= ~CONN_F_SEQ_MASK
        elif not flags & CONN_F_SEQ_MASK:
            flags |= CONN_F_IN_SEQ
        out = CONN_V0.pack(c.protocol, c.cport, c.vport, c.dport, c.caddr, c.vaddr, c.daddr, flags, c.state)
        return out + SEQ_DATA.pack(*c.seq) if c.seq is not None else out
    options = b""
    if c.seq is not None:
        options += bytes((OPT_SEQ_DATA, SEQ_DATA.size)) + SEQ_DATA.pack(*c.seq)
    options += pe_options(c.pe_data, c.pe_name)
    layout = CONN_V6 if c.ipv6 else CONN_V4
    size = layout.size + len(options)
    if size > SVER_MASK:
        raise ValueError("connection too large for its size field")
    return layout.pack(STYPE_F_INET6 if c.ipv6 else 0, c.protocol, size, c.flags & ~CONN_F_HASHED, c.state,
                       c.cport, c.vport, c.dport, c.fwmark, c.timeout, c.caddr, c.vaddr, c.daddr) + options


def encode_message(conns: list[SyncConn], syncid: int = 0, version: int = SYNC_VERSION) -> bytes:
    """One whole message (no size limit applied: the master splits by sync_maxlen itself)."""
    body = bytearray()
    for c in conns:
        if version:
            body += bytes(-len(body) & 3)  # each connection starts 32-bit aligned
        body += encode_conn(c, version)
    size = header_size(version) + len(body)
    return header(version, syncid, len(conns), size) + bytes(body)


# -- decoding -----------------------------------------------------------------------------------

def decode(data: bytes | bytearray | memoryview) -> Message | Rejected:
    """Parse one datagram. Structural errors reject the whole message; a connection the backup
    cannot use for semantic reasons (protocol, state, options) is still returned, for it to skip."""
    data = bytes(data)
    try:
        if len(data) < HEADER_V0.size:
            raise _Bad("short")
        if len(data) != int.from_bytes(data[2:4], "big"):
            raise _Bad("size_mismatch")
        if len(data) >= HEADER_V1.size:
            reserved, syncid, _size, nr_conns, version, spare = HEADER_V1.unpack_from(data)
            if reserved == 0 and version == SYNC_VERSION and spare == 0:
                return Message(1, syncid, _conns_v1(data, nr_conns))
        nr_conns, syncid, _size = HEADER_V0.unpack_from(data)
        return Message(0, syncid, _conns_v0(data, nr_conns))
    except _Bad as bad:
        return Rejected(str(bad))


def _conns_v1(data: bytes, nr_conns: int) -> list[SyncConn]:
    conns = []
    pos, end = HEADER_V1.size, len(data)
    for _ in range(nr_conns):
        if pos + CONN_V4.size > end:
            raise _Bad("truncated")
        ver_size = int.from_bytes(data[pos + 2:pos + 4], "big")
        size = ver_size & SVER_MASK
        if ver_size >> SVER_SHIFT:
            raise _Bad("conn_version")
        if pos + size > end:
            raise _Bad("conn_size")
        conns.append(_conn_v1(data, pos, pos + size))
        pos += (size + 3) & ~3
    if end - pos > 0:
        raise _Bad("trailing_bytes")  # the kernel's sizes end exactly at the last connection
    return conns


def _conn_v1(data: bytes, pos: int, conn_end: int) -> SyncConn:
    ctype = data[pos]
    if ctype & STYPE_F_INET6:
        layout, ipv6 = CONN_V6, True
    elif ctype == 0:
        layout, ipv6 = CONN_V4, False
    else:
        raise _Bad("conn_type")
    if pos + layout.size > conn_end:
        raise _Bad("conn_size")
    (_t, protocol, _vs, flags, state, cport, vport, dport, fwmark, timeout,
     caddr, vaddr, daddr) = layout.unpack_from(data, pos)
    conn = SyncConn(protocol, caddr, cport, vaddr, vport, daddr, dport, flags, state, fwmark, timeout, ipv6)
    _options(data, pos + layout.size, conn_end, conn)
    return conn


def _options(data: bytes, p: int, end: int, conn: SyncConn) -> None:
    seen: set[int] = set()
    while p < end:
        if p + 2 > end:
            raise _Bad("option_truncated")
        ptype, plen = data[p], data[p + 1]
        p += 2
        if not plen or p + plen > end:
            raise _Bad("option_length")
        kind = ptype & ~OPT_F_PARAM
        value = data[p:p + plen]
        if kind in (OPT_SEQ_DATA, OPT_PE_DATA, OPT_PE_NAME):
            if kind in seen:
                raise _Bad("option_twice")
            seen.add(kind)
        if kind == OPT_SEQ_DATA:
            if plen != SEQ_DATA.size:
                raise _Bad("option_length")
            conn.seq = SEQ_DATA.unpack(value)
        elif kind == OPT_PE_DATA:
            conn.pe_data = value  # plen <= 255 == PE_DATA_MAX by construction
        elif kind == OPT_PE_NAME:
            if plen > PE_NAME_MAX:
                raise _Bad("option_length")
            conn.pe_name = value
        elif not ptype & OPT_F_PARAM:
            conn.unknown_param = ptype  # mandatory and unknown: this connection is skipped, not the message
            return
        p += plen


def _conns_v0(data: bytes, nr_conns: int) -> list[SyncConn]:
    conns = []
    pos, end = HEADER_V0.size, len(data)
    for _ in range(nr_conns):
        if pos + CONN_V0.size > end:
            raise _Bad("truncated")
        protocol, cport, vport, dport, caddr, vaddr, daddr, flags, state = CONN_V0.unpack_from(data, pos)
        pos += CONN_V0.size
        conn = SyncConn(protocol, caddr, cport, vaddr, vport, daddr, dport, flags, state)
        if flags & CONN_F_SEQ_MASK:
            if pos + SEQ_DATA.size > end:
                raise _Bad("truncated")
            conn.seq = SEQ_DATA.unpack_from(data, pos)
            pos += SEQ_DATA.size
        conns.append(conn)
    if pos != end:
        raise _Bad("trailing_bytes")
    return conns
