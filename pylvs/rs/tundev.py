"""A layer-3 TUN device: packets written to its descriptor enter the local stack as if received."""

from __future__ import annotations

import fcntl
import os
import struct

TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000  # plain IP packets, no 4-byte packet-information prefix
IFF_VNET_HDR = 0x4000  # a virtio_net_hdr before each packet: partial checksums and GSO cross
IFNAMSIZ = 16


def open_tun(name: str, vnet_hdr: bool = False) -> tuple[int, str]:
    """Create (or attach to) TUN device `name` in the current namespace; returns (fd, actual name).

    The device lives as long as the descriptor: when the owner exits, it disappears. With
    `vnet_hdr`, every write starts with a 10-byte virtio_net_hdr (pylvs.packet.vnet).
    """
    if len(name.encode()) >= IFNAMSIZ:
        raise ValueError(f"interface name too long: {name}")
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_CLOEXEC)
    try:
        flags = IFF_TUN | IFF_NO_PI | (IFF_VNET_HDR if vnet_hdr else 0)
        ifr = struct.pack("16sH22x", name.encode(), flags)
        res = fcntl.ioctl(fd, TUNSETIFF, ifr)
    except BaseException:
        os.close(fd)
        raise
    return fd, res[:IFNAMSIZ].rstrip(b"\0").decode()
