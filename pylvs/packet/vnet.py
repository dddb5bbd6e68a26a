"""virtio_net_hdr: the 10-byte header PACKET_VNET_HDR puts before every frame.

It carries the offload state of the skb (partial checksum, GSO), so that large TCP segments and
unfinished checksums cross the director without being segmented or summed in Python.
Fields are in host byte order (little-endian on every machine we run on).
"""

from __future__ import annotations

import struct

VNET_HDR_LEN = 10
F_NEEDS_CSUM = 1
F_DATA_VALID = 2
GSO_NONE = 0
GSO_TCPV4 = 1
GSO_UDP = 3
GSO_TCPV6 = 4
GSO_UDP_L4 = 5
GSO_ECN = 0x80

_HDR = struct.Struct("<BBHHHH")
EMPTY = bytes(VNET_HDR_LEN)


def pack(flags: int = 0, gso_type: int = GSO_NONE, hdr_len: int = 0, gso_size: int = 0,
         csum_start: int = 0, csum_offset: int = 0) -> bytes:
    return _HDR.pack(flags, gso_type, hdr_len, gso_size, csum_start, csum_offset)


def unpack(buf: bytes | bytearray | memoryview) -> tuple[int, int, int, int, int, int]:
    """(flags, gso_type, hdr_len, gso_size, csum_start, csum_offset)."""
    return _HDR.unpack_from(buf, 0)
