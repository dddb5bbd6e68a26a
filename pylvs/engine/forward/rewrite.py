"""The per-packet tail every rewriting method shares: TTL and checksums (the MACs are set by Egress.send).

The callers have already written the new addresses and ports; the deltas they pass were computed
once per connection binding (pylvs.packet.checksum), so this is a few integer operations.
"""

from __future__ import annotations

from crc32c import crc32c

from pylvs.packet import checksum
from pylvs.packet.layout import IP, IP_CSUM, IP_TTL, Buffer
from pylvs.packet.vnet import F_NEEDS_CSUM

SCTP_CRC = 8  # offset of the CRC32c in the SCTP common header

TTL_DELTA = 0xFEFF  # one's-complement of 0x0100: the TTL is the high byte of its 16-bit word


class Deltas:
    """Checksum deltas for one direction of one binding (addresses and ports old -> new)."""

    __slots__ = ("ip", "l4", "l4_partial")

    def __init__(self, old_addrs: bytes, new_addrs: bytes, old_ports: bytes, new_ports: bytes,
                 ttl: bool = True) -> None:
        addr = checksum.delta(old_addrs, new_addrs)
        self.ip = checksum.combine(addr, TTL_DELTA) if ttl else addr
        self.l4 = checksum.combine(addr, checksum.delta(old_ports, new_ports))
        # A partial checksum holds only the pseudo-header sum: ports are summed later.
        self.l4_partial = addr


def decrement_ttl(buf: Buffer) -> None:
    """TTL - 1 with the IP header checksum kept right (the caller has checked that TTL > 1)."""
    buf[IP + IP_TTL] -= 1
    o = IP + IP_CSUM
    c = ((buf[o] << 8 | buf[o + 1]) ^ 0xFFFF) + TTL_DELTA
    c = (c & 0xFFFF) + (c >> 16)
    c = ((c & 0xFFFF) + (c >> 16)) ^ 0xFFFF
    buf[o] = c >> 8
    buf[o + 1] = c & 0xFF


def finish(buf: Buffer, l4: int, csum_off: int, d: Deltas, partial: bool, udp: bool) -> None:
    """Decrement the TTL and patch both checksums (the caller has checked that TTL > 1: Egress.refuse)."""
    buf[IP + IP_TTL] -= 1
    o = IP + IP_CSUM
    c = ((buf[o] << 8 | buf[o + 1]) ^ 0xFFFF) + d.ip
    c = (c & 0xFFFF) + (c >> 16)
    c = ((c & 0xFFFF) + (c >> 16)) ^ 0xFFFF
    buf[o] = c >> 8
    buf[o + 1] = c & 0xFF
    o = l4 + csum_off
    c = buf[o] << 8 | buf[o + 1]
    if partial:
        c += d.l4_partial
        c = (c & 0xFFFF) + (c >> 16)
        c = (c & 0xFFFF) + (c >> 16)
    elif c or not udp:  # a zero UDP checksum means "none" and stays so
        c = (c ^ 0xFFFF) + d.l4
        c = (c & 0xFFFF) + (c >> 16)
        c = ((c & 0xFFFF) + (c >> 16)) ^ 0xFFFF
        if udp and not c:
            c = 0xFFFF
    buf[o] = c >> 8
    buf[o + 1] = c & 0xFF


def finish_sctp(buf: Buffer, l4: int, ports: bytes, d: Deltas, partial: bool) -> None:
    """`finish` for SCTP, with the new ports written here: TTL - 1 and the IP checksum by the deltas;
    the CRC32c covers no address, so it is computed afresh only when a port changes or the sender left
    it to offload (sctp_dnat_handler, sctp_snat_handler), and is then complete."""
    changed = buf[l4:l4 + 4] != ports
    buf[l4:l4 + 4] = ports
    buf[IP + IP_TTL] -= 1
    o = IP + IP_CSUM
    buf[o:o + 2] = checksum.apply(buf[o] << 8 | buf[o + 1], d.ip).to_bytes(2, "big")
    if changed or partial:
        end = IP + (buf[IP + 2] << 8 | buf[IP + 3])
        buf[l4 + SCTP_CRC:l4 + SCTP_CRC + 4] = bytes(4)
        buf[l4 + SCTP_CRC:l4 + SCTP_CRC + 4] = crc32c(bytes(buf[l4:end])).to_bytes(4, "little")
        buf[0] &= ~F_NEEDS_CSUM


def set_checksum(buf: Buffer, start: int, end: int, field: int) -> None:
    """Recompute a checksum from scratch over buf[start:end] (for rare packets such as ICMP)."""
    buf[field] = buf[field + 1] = 0
    c = checksum.checksum(buf[start:end])
    buf[field] = c >> 8
    buf[field + 1] = c & 0xFF


def finish_rebuilt(buf: Buffer, l4: int, csum_off: int, proto: int, partial: bool) -> None:
    """As `finish`, for a packet whose length changed: both checksums are computed afresh."""
    buf[IP + IP_TTL] -= 1
    ihl = (buf[IP] & 0x0F) << 2
    end = IP + (buf[IP + 2] << 8 | buf[IP + 3])
    set_checksum(buf, IP, IP + ihl, IP + IP_CSUM)
    pseudo = checksum.pseudo_header_sum(bytes(buf[IP + 12:IP + 16]), bytes(buf[IP + 16:IP + 20]), proto, end - l4)
    o = l4 + csum_off
    if partial:
        buf[o:o + 2] = pseudo.to_bytes(2, "big")  # the kernel completes the rest
    else:
        buf[o] = buf[o + 1] = 0
        buf[o:o + 2] = checksum.checksum(buf[l4:end], pseudo).to_bytes(2, "big")


def patch(buf: Buffer, off: int, value: int, size: int, csum: int, partial: bool) -> None:
    """Overwrite a 16- or 32-bit header field, keeping a complete checksum at `csum` right (RFC 1624)."""
    old = bytes(buf[off:off + size])
    new = value.to_bytes(size, "big")
    buf[off:off + size] = new
    if not partial:
        c = checksum.apply(buf[csum] << 8 | buf[csum + 1], checksum.delta(old, new))
        buf[csum:csum + 2] = c.to_bytes(2, "big")


# The recipe of a method that changes no address or port (DR, tunnels): only the TTL's delta.
TTL_ONLY = Deltas(b"", b"", b"", b"")


def finish6(buf: Buffer, l4: int, csum_off: int, d: Deltas, partial: bool, udp: bool) -> None:
    """`finish` for IPv6: the hop limit goes down (no header checksum), the L4 checksum takes the delta
    (a partial one only the pseudo-header's address part). IPv6 UDP checksums are never zero."""
    buf[IP + 7] -= 1
    o = l4 + csum_off
    c = buf[o] << 8 | buf[o + 1]
    if partial:
        c = checksum.fold(c + d.l4_partial)
    else:
        c = checksum.apply(c, d.l4)
        if udp and not c:
            c = 0xFFFF
    buf[o] = c >> 8
    buf[o + 1] = c & 0xFF
