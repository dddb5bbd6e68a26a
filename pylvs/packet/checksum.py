"""Internet checksums: full (RFC 1071) and incremental (RFC 1624, eqn. 3).

A "delta" is the one's-complement sum of (new words - old words); connections precompute it once
so that rewriting a packet costs one add-and-fold per checksum field.
"""

from __future__ import annotations


def fold(x: int) -> int:
    """Fold a non-negative integer into a 16-bit one's-complement sum (end-around carry)."""
    while x >> 16:
        x = (x & 0xFFFF) + (x >> 16)
    return x


def ones_sum(data: bytes | bytearray | memoryview) -> int:
    """One's-complement sum of the 16-bit big-endian words of `data` (odd length padded)."""
    if len(data) & 1:
        data = bytes(data) + b"\0"
    # 2**16 == 1 (mod 0xFFFF): the big integer's residue is the folded sum, computed in C.
    s = int.from_bytes(data, "big") % 0xFFFF
    if s == 0 and any(data):
        return 0xFFFF
    return s


def checksum(data: bytes | bytearray | memoryview, initial: int = 0) -> int:
    """The value to store in a checksum field covering `data` (plus an already summed `initial`)."""
    return ~fold(ones_sum(data) + initial) & 0xFFFF


def delta(old: bytes, new: bytes) -> int:
    """One's-complement difference new - old over equal-length, even-length byte strings."""
    return fold(0xFFFF - ones_sum(old) + ones_sum(new))


def combine(*deltas: int) -> int:
    return fold(sum(deltas))


def apply(check: int, d: int) -> int:
    """Update a complete checksum field by delta `d` (HC' = ~(~HC + m' - m))."""
    return ~fold((check ^ 0xFFFF) + d) & 0xFFFF


def pseudo_header_sum(saddr: bytes, daddr: bytes, proto: int, length: int) -> int:
    return fold(ones_sum(saddr) + ones_sum(daddr) + proto + length)
