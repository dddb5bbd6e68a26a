"""The offload state of a tunnelled packet, carried over to its inner packet (virtio_net_hdr).

Inside one machine (veth pairs between namespaces) and after GRO, the director's tunnelled packets
may still be CHECKSUM_PARTIAL (the inner TCP/UDP checksum field holds only the pseudo-header sum)
and GSO super-frames. The kernel says so in the virtio_net_hdr an AF_PACKET socket with
PACKET_VNET_HDR puts before each packet; a TUN device with IFF_VNET_HDR takes the same header
before each write. A kernel decapsulator keeps that state for the inner packet; so do we: the
checksum start moves from the outer packet to the inner one, the GSO type stays TCPV4, TCPV6 or
UDP_L4 (AF_PACKET never reports the tunnel bits). A packet whose checksum is complete gets an empty
header, so the receiving stack verifies it as it would any packet.
"""

from __future__ import annotations

import socket

from pylvs.packet import vnet

TCP_CHECK = 16  # offset of the checksum field in the TCP header
UDP_CHECK = 6
GSO_FOR = {vnet.GSO_TCPV4: socket.IPPROTO_TCP, vnet.GSO_TCPV6: socket.IPPROTO_TCP,
           vnet.GSO_UDP_L4: socket.IPPROTO_UDP}


def ip_header(inner: memoryview) -> tuple[int, int]:
    """(header length, upper-layer protocol) of an inner IPv4 or IPv6 packet (IPv6: no extension header)."""
    if inner[0] >> 4 == 6:
        return 40, inner[6]
    return (inner[0] & 0x0F) << 2, inner[9]


def l4_header_len(inner: memoryview, ihl: int) -> int:
    """Length of the inner TCP or UDP header (0 for other protocols or when it is cut short)."""
    proto = ip_header(inner)[1]
    if proto == socket.IPPROTO_TCP and len(inner) >= ihl + 20:
        doff = (inner[ihl + 12] >> 4) * 4
        return doff if doff >= 20 and len(inner) >= ihl + doff else 0
    if proto == socket.IPPROTO_UDP and len(inner) >= ihl + 8:
        return 8
    return 0


def inner_header(hdr: tuple[int, int, int, int, int, int], inner_start: int,
                 inner: memoryview) -> tuple[bytes | None, str]:
    """The virtio_net_hdr to write before `inner`, which starts `inner_start` bytes into the packet
    the kernel described with `hdr` (vnet.unpack); (None, reason) if it cannot be carried over."""
    flags, gso_type, _hdr_len, gso_size, csum_start, csum_offset = hdr
    gso = gso_type & ~vnet.GSO_ECN
    if not flags & vnet.F_NEEDS_CSUM:
        # Complete (or not yet verified) checksums: the receiving stack checks them itself.
        return (vnet.EMPTY, "") if gso == vnet.GSO_NONE else (None, "gso_without_csum")
    ihl, proto_in = ip_header(inner)
    start = csum_start - inner_start
    if start < ihl or start + csum_offset + 2 > len(inner):
        return None, "csum_outside_inner"  # a partial checksum of the tunnel itself: not ours to move
    l4len = l4_header_len(inner, ihl)
    hdr_len = ihl + l4len if start == ihl and l4len else start + csum_offset + 2
    if gso != vnet.GSO_NONE:
        proto = GSO_FOR.get(gso)
        want = TCP_CHECK if proto == socket.IPPROTO_TCP else UDP_CHECK
        if proto != proto_in or start != ihl or csum_offset != want or not l4len or not gso_size:
            return None, "gso_unsupported"
    return vnet.pack(vnet.F_NEEDS_CSUM, gso_type if gso else vnet.GSO_NONE, hdr_len, gso_size if gso else 0,
                     start, csum_offset), ""
