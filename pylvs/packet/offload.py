"""Software offloads for frames that must leave without them: checksum completion, GSO, fragments.

An encapsulated frame cannot be handed back to AF_PACKET as a tunnel GSO super-frame, and nothing
completes a partial checksum after the director adds an outer header, so the tunnel method does
here what a NIC would: finish checksums, cut TCP/UDP super-frames into segments (with the kernel's
tcp_gso_segment rules). Packets that do not fit their link are fragmented here too (ip_fragment),
for every method (pylvs.engine.egress) and for the tunnels' outer packets.

Sums use the fact that 2**16 == 1 (mod 0xFFFF): the one's-complement sum of an even-length byte
string is its big-endian integer value mod 0xFFFF, computed in C by int.from_bytes.
"""

from __future__ import annotations

import struct

from pylvs.packet.layout import IP, IP_CSUM, IP_MF, PROTO_UDP, TCP_FIN, Buffer
from pylvs.packet.vnet import VNET_HDR_LEN

TCP_PSH = 0x08
TCP_CWR = 0x80
_H = struct.Struct("!H")
_HH = struct.Struct("!HH")
_I = struct.Struct("!I")
_FROM = int.from_bytes


def csum_of(value: int) -> int:
    """The checksum field for a sum given as an integer mod 0xFFFF (nonzero data assumed)."""
    return -value % 0xFFFF


def words(data: Buffer | bytes) -> int:
    """The one's-complement sum of `data` as an integer mod 0xFFFF (odd length padded)."""
    n = _FROM(data, "big")
    return (n << 8 if len(data) & 1 else n) % 0xFFFF


def complete_partial(buf: Buffer, end: int) -> bool:
    """Finish a CHECKSUM_PARTIAL frame's L4 checksum in place (vnet csum_start/csum_offset).

    The field holds the pseudo-header sum; summing from csum_start to the end of the IP packet,
    field included, gives the value whose complement belongs there. False if the offsets are bad.
    """
    start = VNET_HDR_LEN + (buf[6] | buf[7] << 8)
    field = start + (buf[8] | buf[9] << 8)
    if start < IP + 20 or field + 2 > end:
        return False
    c = csum_of(words(buf[start:end]))
    if not c and buf[IP + 9] == PROTO_UDP:
        c = 0xFFFF  # zero means "no checksum" in UDP
    buf[field] = c >> 8
    buf[field + 1] = c & 0xFF
    return True


def ip_checksum(hdr: bytearray) -> None:
    """Set the header checksum of an IPv4 header held alone in `hdr`."""
    hdr[IP_CSUM] = hdr[IP_CSUM + 1] = 0
    _H.pack_into(hdr, IP_CSUM, csum_of(_FROM(hdr, "big") % 0xFFFF))


def tcp_segments(pkt: Buffer, ihl: int, mss: int, headroom: int = 0) -> list[bytearray]:
    """Cut a TCP/IPv4 super-frame (IP header on) into packets of at most `mss` payload bytes.

    As tcp_gso_segment: seq advances by the payload, FIN and PSH stay on the last segment only,
    CWR on the first only; IP ids count up from the super-frame's. Checksums are complete. Each
    packet starts after `headroom` zero bytes, where the caller writes its outer headers in place.
    """
    thl = (pkt[ihl + 12] >> 4) << 2
    hl = ihl + thl
    end = _H.unpack_from(pkt, 2)[0]
    iph = bytearray(pkt[:ihl])
    tcph = bytearray(pkt[ihl:hl])
    ip_id = _H.unpack_from(iph, 4)[0]
    seq = _I.unpack_from(tcph, 4)[0]
    flags = tcph[13]
    lead = bytes(headroom)
    join = bytearray().join
    # The fixed parts of both sums, once: what changes per segment is added in the loop.
    iph[2:6] = b"\0\0\0\0"  # total length, id
    iph[10] = iph[11] = 0
    ipsum = _FROM(iph, "big") % 0xFFFF
    base = (_FROM(iph[12:20], "big") + 6 + thl) % 0xFFFF  # pseudo header, but the payload length
    tcph[4:8] = b"\0\0\0\0"
    tcph[13] = 0
    tcph[16] = tcph[17] = 0
    base += _FROM(tcph, "big") % 0xFFFF  # the TCP header, but seq and flags
    if mss <= 0:
        mss = end - hl
    out: list[bytearray] = []
    for off in range(hl, end, mss):
        stop = off + mss
        if stop >= end:
            stop = end
            f = flags
        else:
            f = flags & ~(TCP_FIN | TCP_PSH)
        if off != hl:
            f &= ~TCP_CWR
        chunk = pkt[off:stop]
        size = stop - off
        s = (seq + off - hl) & 0xFFFFFFFF
        ip_id &= 0xFFFF
        _HH.pack_into(iph, 2, hl + size, ip_id)
        _H.pack_into(iph, 10, -(ipsum + hl + size + ip_id) % 0xFFFF)
        tcph[4:8] = _I.pack(s)
        tcph[13] = f
        n = _FROM(chunk, "big")
        if size & 1:
            n <<= 8
        _H.pack_into(tcph, 16, -(base + size + (s >> 16) + (s & 0xFFFF) + f + n) % 0xFFFF)
        out.append(join((lead, iph, tcph, chunk)))
        ip_id += 1
    return out


def udp_segments(pkt: Buffer, ihl: int, size: int, headroom: int = 0) -> list[bytearray]:
    """Cut a UDP/IPv4 GSO frame (UDP_SEGMENT) into datagrams of `size` payload bytes each."""
    end = _H.unpack_from(pkt, 2)[0]
    hl = ihl + 8
    iph = bytearray(pkt[:ihl])
    udph = bytearray(pkt[ihl:hl])
    udph[6] = udph[7] = 0
    ip_id = _H.unpack_from(iph, 4)[0]
    base = (_FROM(iph[12:20], "big") + PROTO_UDP) % 0xFFFF
    ports = _FROM(udph[0:4], "big") % 0xFFFF
    lead = bytes(headroom)
    if size <= 0:
        size = end - hl
    out: list[bytearray] = []
    for off in range(hl, end, size):
        stop = min(off + size, end)
        chunk = pkt[off:stop]
        ulen = 8 + stop - off
        iph[2:6] = _HH.pack(ihl + ulen, ip_id & 0xFFFF)
        ip_checksum(iph)
        udph[4:6] = _H.pack(ulen)
        _H.pack_into(udph, 6, csum_of((base + ulen + ports + ulen + words(chunk)) % 0xFFFF) or 0xFFFF)
        out.append(bytearray(b"".join((lead, iph, udph, chunk))))
        ip_id += 1
    return out


def fragments(header: Buffer, payload: Buffer, mtu: int) -> list[tuple[bytearray, int]]:
    """Split an IPv4 packet (its `header`, options included) into fragments that fit `mtu`, as ip_fragment.

    Returns (IP header, payload offset) pairs; the caller appends payload[offset:offset+len]. Each
    header carries its length, offset, MF and checksum, and the packet's ID and TTL; DF is cleared
    (IPVS sets ignore_df: what it sends is cut, never refused here). Fragments after the first keep
    only the options marked "copied" (the others become NOPs, as ip_options_fragment).
    """
    hl = len(header)
    step = (mtu - hl) & ~7
    n = len(payload)
    first = bytearray(header)
    later = _later_fragment_header(first) if hl > 20 else first
    out: list[tuple[bytearray, int]] = []
    for off in range(0, n, step):
        size = min(step, n - off)
        h = bytearray(later if off else first)
        frag = (off >> 3) | (IP_MF if off + size < n else 0)
        h[2:4] = _H.pack(hl + size)
        h[6:8] = _H.pack(frag)
        ip_checksum(h)
        out.append((h, off))
    return out


def _later_fragment_header(header: bytearray) -> bytearray:
    """The header of fragments after the first: options without the "copied" bit become NOPs."""
    h = bytearray(header)
    i, end = 20, len(h)
    while i < end:
        kind = h[i]
        if kind == 0:  # end of options
            break
        if kind == 1:  # NOP
            i += 1
            continue
        size = h[i + 1] if i + 1 < end else 0
        if size < 2 or i + size > end:
            break
        if not kind & 0x80:
            h[i:i + size] = b"\x01" * size
        i += size
    return h
