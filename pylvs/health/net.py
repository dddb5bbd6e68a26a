"""Non-blocking sockets for checkers: bind options (bindto, bind_port, bind_if, fwmark) and
asyncio connect/receive with timeouts. Nothing here ever blocks the event loop."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
from dataclasses import dataclass

from pylvs.health.aio import within

log = logging.getLogger("pylvs.health")

SO_MARK = getattr(socket, "SO_MARK", 36)
SO_BINDTODEVICE = getattr(socket, "SO_BINDTODEVICE", 25)
_warned: set[str] = set()


@dataclass(frozen=True)
class Bind:
    """Where a checker's packets come from."""

    addr: str | None = None
    port: int | None = None
    interface: str | None = None
    fwmark: int | None = None


def family(addr: str) -> int:
    return socket.AF_INET6 if ipaddress.ip_address(addr).version == 6 else socket.AF_INET


def _warn_once(key: str, message: str) -> None:
    if key not in _warned:
        _warned.add(key)
        log.warning("%s", message)


def make_socket(dst: str, kind: int, bind: Bind, proto: int = 0) -> socket.socket:
    """A non-blocking socket toward `dst` with the checker's bind options applied."""
    sock = socket.socket(family(dst), kind, proto)
    try:
        sock.setblocking(False)
        if bind.fwmark:
            try:
                sock.setsockopt(socket.SOL_SOCKET, SO_MARK, bind.fwmark)
            except OSError as exc:
                _warn_once(f"mark{bind.fwmark}", f"checker fwmark {bind.fwmark} not set: {exc.strerror}")
        if bind.interface:
            try:
                sock.setsockopt(socket.SOL_SOCKET, SO_BINDTODEVICE, bind.interface.encode() + b"\0")
            except OSError as exc:
                _warn_once(f"if{bind.interface}", f"checker bind_if {bind.interface} not set: {exc.strerror}")
        if bind.addr or bind.port:
            if bind.port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((bind.addr or ("::" if sock.family == socket.AF_INET6 else "0.0.0.0"), bind.port or 0))
    except BaseException:
        sock.close()
        raise
    return sock


async def tcp_connect(dst: str, port: int, bind: Bind, timeout: float) -> socket.socket:
    """A connected TCP socket, or TimeoutError / OSError."""
    loop = asyncio.get_running_loop()
    sock = make_socket(dst, socket.SOCK_STREAM, bind)
    try:
        await within(timeout, loop.sock_connect(sock, (dst, port)))
    except BaseException:
        sock.close()
        raise
    return sock


async def open_stream(dst: str, port: int, bind: Bind, timeout: float, ssl_context=None,
                      server_hostname: str | None = None) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    sock = await tcp_connect(dst, port, bind, timeout)
    try:
        connect = asyncio.open_connection(sock=sock, ssl=ssl_context,
                                          server_hostname=(server_hostname or "") if ssl_context else None,
                                          ssl_handshake_timeout=timeout if ssl_context else None)
        return await within(timeout, connect)
    except BaseException:
        sock.close()
        raise


async def close_stream(writer: asyncio.StreamWriter) -> None:
    writer.close()
    try:
        await within(1.0, writer.wait_closed())
    except (TimeoutError, OSError):
        pass


def describe(exc: BaseException) -> str:
    """timeout / the errno text, as a short reason."""
    if isinstance(exc, TimeoutError):
        return "timeout"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__

