"""Send IPv4 packets built elsewhere (by scapy, in a test) from inside a lab namespace, byte for byte.

`python -m pylvs.lab.inject [--bind IP:PORT] [--wait S] HEX...` sends each packet through a raw
socket (IP_HDRINCL: the kernel fills in only the header checksum, and an ID of 0), and, with
--bind, holds a UDP socket on that address meanwhile so that answers to the injected datagrams
are received (printed as hex, one a line) rather than refused by the namespace's kernel.
"""

from __future__ import annotations

import argparse
import socket
import sys
import time

from pylvs.lab.netns import Netns


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--bind", help="IP:PORT to receive answers on")
    p.add_argument("--wait", type=float, default=1.0, help="seconds to wait for answers after the last packet")
    p.add_argument("packets", nargs="+", help="IPv4 packets, hex")
    args = p.parse_args(argv)
    udp = None
    if args.bind:
        host, port = args.bind.rsplit(":", 1)
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        udp.bind((host, int(port)))
    raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    for text in args.packets:
        packet = bytes.fromhex(text)
        raw.sendto(packet, (socket.inet_ntoa(packet[16:20]), 0))
        time.sleep(0.05)
    if udp is not None:
        deadline = time.monotonic() + args.wait
        while (left := deadline - time.monotonic()) > 0:
            udp.settimeout(left)
            try:
                print(udp.recv(65535).hex(), flush=True)
            except TimeoutError:
                break
    return 0


def inject(net: Netns, role: str, packets: list[bytes], bind: str | None = None, wait: float = 1.0) -> list[bytes]:
    """Send `packets` from `role`; the UDP payloads that came back to `bind` meanwhile."""
    extra = ["--bind", bind] if bind else []
    r = net.exec(role, sys.executable, "-m", "pylvs.lab.inject", *extra, "--wait", str(wait),
                 *(p.hex() for p in packets), timeout=30 + wait)
    return [bytes.fromhex(line) for line in r.stdout.split()]


if __name__ == "__main__":
    raise SystemExit(main())
