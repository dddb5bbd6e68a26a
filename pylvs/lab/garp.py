"""Send gratuitous ARP for an address the kernel holds (as `arping -U`), for labs without arping.

Usage: python -m pylvs.lab.garp IFACE ADDR [COUNT]
A failover moves a kernel address (a floating gateway) this way; lvsd announces its VIPs itself.
"""

from __future__ import annotations

import socket
import sys
import time

from pylvs.packet import arp


def announce(ifname: str, addr: str, count: int = 2) -> None:
    with socket.socket(socket.AF_PACKET, socket.SOCK_RAW) as sock:
        sock.bind((ifname, 0))
        mac = sock.getsockname()[4]
        frame = arp.gratuitous(mac, socket.inet_aton(addr))
        for i in range(count):
            if i:
                time.sleep(0.05)
            sock.send(frame)


if __name__ == "__main__":
    announce(sys.argv[1], sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else 2)
