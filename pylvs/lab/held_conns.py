"""Many HTTP keep-alive connections held open at once, each checked for the server's bytes.

    python -m pylvs.lab.held_conns --host VIP --count 700 --file big.bin --ready R --go G

Opens `count` connections to VIP:80, asks each for its own 2 KiB slice of /big (a Range request) and
checks it against `file`; then writes the file `ready` and waits for the file `go` (a test looks at
the director meanwhile); then asks each connection, still open, for another slice and checks it.
Prints a JSON summary: {"first": ok, "second": ok, "errors": [...]}; exit 0 if every answer was right.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import time

SLICE = 2048


def request(sock: socket.socket, host: str, start: int) -> bytes:
    """One Range request for SLICE bytes from `start` on an open connection; the body."""
    sock.sendall(f"GET /big HTTP/1.1\r\nHost: {host}\r\nRange: bytes={start}-{start + SLICE - 1}\r\n\r\n".encode())
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed before the headers")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lengths = [line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")]
    length = int(lengths[0])
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed in the body")
        body += chunk
    return body


def round_(socks: list[socket.socket], host: str, expected: bytes, offset: int, errors: list[str]) -> int:
    ok = 0
    for i, sock in enumerate(socks):
        start = offset + i * SLICE
        try:
            body = request(sock, host, start)
        except (OSError, IndexError, ValueError) as exc:
            errors.append(f"connection {i}: {exc!r}")
            continue
        if body == expected[start:start + SLICE]:
            ok += 1
        else:
            errors.append(f"connection {i}: {len(body)} bytes, not the file's")
    return ok


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="held_conns")
    p.add_argument("--host", required=True)
    p.add_argument("--port", type=int, default=80)
    p.add_argument("--count", type=int, required=True)
    p.add_argument("--file", required=True, help="the server's /big, to check the answers against")
    p.add_argument("--ready", required=True)
    p.add_argument("--go", required=True)
    p.add_argument("--wait", type=float, default=60.0, help="seconds to wait for --go")
    args = p.parse_args(argv)
    with open(args.file, "rb") as f:
        expected = f.read(2 * args.count * SLICE)
    errors: list[str] = []
    socks = []
    for _ in range(args.count):
        sock = socket.create_connection((args.host, args.port), timeout=10)
        socks.append(sock)
    first = round_(socks, args.host, expected, 0, errors)
    with open(args.ready, "w") as f:
        f.write(f"{first}\n")
    deadline = time.monotonic() + args.wait
    while not os.path.exists(args.go) and time.monotonic() < deadline:
        time.sleep(0.05)
    second = round_(socks, args.host, expected, args.count * SLICE, errors)
    for sock in socks:
        sock.close()
    print(json.dumps({"first": first, "second": second, "errors": errors[:20]}))
    return 0 if first == second == args.count else 1


if __name__ == "__main__":
    sys.exit(main())
