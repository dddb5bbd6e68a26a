"""Keep-alive HTTP connections that notice when they break: for failover and scale-out labs.

Opens N connections to ADDR:PORT, and on each sends a GET every INTERVAL seconds, reading the
answer (nginx in the labs answers its own name, so a connection records which real server serves
it). A connection is broken when it is reset, closed, or an answer takes longer than TIMEOUT; a
broken connection is not reopened. Prints "ready N" once all are open; on SIGTERM/SIGINT (or
after --duration) writes one JSON line per connection to --out and exits.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import time


async def _request(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> str:
    writer.write(b"GET / HTTP/1.1\r\nHost: probe\r\n\r\n")
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                   if line.lower().startswith(b"content-length:")), 0)
    return (await reader.readexactly(length)).decode(errors="replace").strip()


async def _connection(addr: str, port: int, interval: float, timeout: float, record: dict,
                      opened: asyncio.Event, stop: asyncio.Event) -> None:
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(addr, port), timeout)
    except (TimeoutError, OSError) as exc:
        record["error"] = f"connect: {exc!r}"
        opened.set()
        return
    record["port"] = writer.get_extra_info("sockname")[1]
    opened.set()
    try:
        while not stop.is_set():
            started = time.monotonic()
            try:
                server = await asyncio.wait_for(_request(reader, writer), timeout)
            except TimeoutError:
                record.update(error="stalled", at=time.time())
                return
            except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
                record.update(error=type(exc).__name__, at=time.time())
                return
            record["requests"] += 1
            record["max_wait"] = max(record["max_wait"], round(time.monotonic() - started, 3))
            if server not in record["servers"]:
                record["servers"].append(server)
            try:
                await asyncio.wait_for(stop.wait(), interval)
            except TimeoutError:
                pass
    finally:
        writer.close()


async def run(addr: str, port: int, conns: int, interval: float, timeout: float, duration: float) -> list[dict]:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    records = [{"port": None, "servers": [], "requests": 0, "max_wait": 0.0, "error": None} for _ in range(conns)]
    tasks = []
    for record in records:  # one at a time: every connection is open before "ready"
        opened = asyncio.Event()
        tasks.append(asyncio.create_task(_connection(addr, port, interval, timeout, record, opened, stop)))
        await opened.wait()
    print(f"ready {sum(r['port'] is not None for r in records)}", flush=True)
    try:
        await asyncio.wait_for(stop.wait(), duration)
    except TimeoutError:
        stop.set()
    await asyncio.gather(*tasks)
    return records


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="keepalive_probe", description=__doc__.splitlines()[0])
    p.add_argument("target", metavar="ADDR:PORT")
    p.add_argument("--conns", type=int, default=50)
    p.add_argument("--interval", type=float, default=0.1)
    p.add_argument("--timeout", type=float, default=2.0, help="an answer slower than this breaks the connection")
    p.add_argument("--duration", type=float, default=120.0)
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    addr, _, port = args.target.rpartition(":")
    records = asyncio.run(run(addr, int(port), args.conns, args.interval, args.timeout, args.duration))
    with open(args.out, "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in records)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
