"""SYN cookies as Linux makes them (net/ipv4/syncookies.c, net/ipv6/syncookies.c), for the SYN proxy
(pylvs.engine.synproxy).

The initial sequence number of the director's SYN-ACK is

    hash(addrs, ports, secret 0) + client ISN + (minute << 24) + ((hash(..., minute, secret 1) + MSS index) mod 2^24)

so the client's ACK (ack - 1 = cookie, seq - 1 = its ISN) proves it received the SYN-ACK, tells when it was
made (the top 8 bits: whole minutes, valid while less than MAX_AGE minutes old) and gives back the MSS
as an index into Linux's table: the IPv4 one, or for IPv6 (addresses of 16 bytes, the same formula)
the IPv6 one, whose entries are link MTUs less 60 (1280, the IPv6 minimum, 1480, 1500 and 9000).
The other SYN options travel in the timestamp, again as Linux does: the low 6 bits of the SYN-ACK's
TSval hold the client's window scale (0xF: none), SACK permitted and ECN (never offered here); the
client echoes it in every TSecr, so without timestamps they are not negotiated. The keyed hash is
BLAKE2s (Linux uses SipHash; any keyed PRF does, the secrets never leave the process).
"""

from __future__ import annotations

import hashlib
import os
import struct

COOKIE_BITS = 24
COOKIE_MASK = (1 << COOKIE_BITS) - 1
MAX_AGE = 2  # minutes (MAX_SYNCOOKIE_AGE)
MSS_TABLE = (536, 1300, 1440, 1460)  # msstab of syncookies.c (IPv4)
MSS_TABLE6 = (1220, 1420, 1440, 8940)  # msstab of net/ipv6/syncookies.c
SEQ_MASK = 0xFFFFFFFF

TS_BITS = 6
TS_MASK = (1 << TS_BITS) - 1
TS_WSCALE_NONE = 0xF
TS_SACK = 1 << 4
TS_ECN = 1 << 5
MAX_WSCALE = 14  # TCP_MAX_WSCALE

_COUNT = struct.Struct("!I")


def mss_table(tuple4: bytes) -> tuple[int, ...]:
    """The MSS table of the addresses' family: `tuple4` is 12 bytes for IPv4, 36 for IPv6."""
    return MSS_TABLE6 if len(tuple4) == 36 else MSS_TABLE


def mss_index(mss: int, table: tuple[int, ...] = MSS_TABLE) -> int:
    """The largest table entry not above the client's MSS (the first one if none is)."""
    for i in range(len(table) - 1, 0, -1):
        if mss >= table[i]:
            return i
    return 0


def minute(now: float) -> int:
    """tcp_cookie_time: whole minutes of the caller's clock."""
    return int(now // 60)


def ts_now(now: float) -> int:
    """The director's TCP timestamp clock: milliseconds, modulo 2^32 (as tcp_ns_to_ts)."""
    return int(now * 1000) & SEQ_MASK


def encode_ts(now: float, wscale: int | None, sack: bool) -> int:
    """cookie_init_timestamp: the clock with its low 6 bits replaced by the options, never ahead of it."""
    clock = ts_now(now)
    options = (TS_WSCALE_NONE if wscale is None else wscale) | (TS_SACK if sack else 0)
    ts = (clock >> TS_BITS << TS_BITS) | options
    if ts > clock:
        ts -= 1 << TS_BITS
    return ts & SEQ_MASK


def decode_ts(tsecr: int) -> tuple[int | None, bool] | None:
    """cookie_timestamp_decode: (window scale or None, SACK) from an echoed TSval; None if impossible."""
    options = tsecr & TS_MASK
    wscale = options & 0xF
    if wscale == TS_WSCALE_NONE:
        return None, bool(options & TS_SACK)
    if wscale > MAX_WSCALE:
        return None
    return wscale, bool(options & TS_SACK)


class SynCookies:
    """Makes and checks cookies with two secrets drawn once per director (or given, for tests)."""

    def __init__(self, secret: bytes | None = None) -> None:
        secret = secret or os.urandom(32)
        self._keys = (hashlib.blake2s(secret + b"\0").digest(), hashlib.blake2s(secret + b"\1").digest())

    def _hash(self, tuple4: bytes, count: int, which: int) -> int:
        h = hashlib.blake2s(tuple4 + _COUNT.pack(count & SEQ_MASK), digest_size=4, key=self._keys[which])
        return int.from_bytes(h.digest(), "big")

    def make(self, tuple4: bytes, client_isn: int, mss: int, now: float) -> tuple[int, int]:
        """(cookie ISN, the MSS it encodes) for a SYN; `tuple4` is saddr + daddr + sport + dport as sent."""
        table = mss_table(tuple4)
        index = mss_index(mss, table)
        count = minute(now)
        cookie = (self._hash(tuple4, 0, 0) + client_isn + (count << COOKIE_BITS)
                  + ((self._hash(tuple4, count, 1) + index) & COOKIE_MASK))
        return cookie & SEQ_MASK, table[index]

    def check(self, tuple4: bytes, client_isn: int, cookie: int, now: float) -> int | None:
        """The MSS a cookie encodes, or None when it is not ours or too old."""
        count = minute(now)
        rest = (cookie - self._hash(tuple4, 0, 0) - client_isn) & SEQ_MASK
        age = (count - (rest >> COOKIE_BITS)) & (SEQ_MASK >> COOKIE_BITS)
        if age >= MAX_AGE:
            return None
        index = (rest - self._hash(tuple4, count - age, 1)) & COOKIE_MASK
        table = mss_table(tuple4)
        return table[index] if index < len(table) else None
