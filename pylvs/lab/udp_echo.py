"""A UDP real server for labs: answers each datagram with its name and the client's address."""

from __future__ import annotations

import argparse
import socket


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--bind", required=True, help="IP:PORT")
    p.add_argument("--name", required=True)
    p.add_argument("--log", help="append one line per datagram: client ip:port and the payload in hex")
    args = p.parse_args(argv)
    host, port = args.bind.rsplit(":", 1)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((host, int(port)))
    log = open(args.log, "a", buffering=1) if args.log else None  # noqa: SIM115
    while True:
        data, peer = sock.recvfrom(65535)
        if log:
            log.write(f"{peer[0]}:{peer[1]} {data.hex()}\n")
        sock.sendto(f"{args.name} {peer[0]}:{peer[1]} ".encode() + data[:64], peer)


if __name__ == "__main__":
    raise SystemExit(main())
