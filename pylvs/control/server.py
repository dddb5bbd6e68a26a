"""The control socket: JSON lines over a root-only Unix stream socket, served from the packet loop.

Requests are small and applied in microseconds between packet batches, so the loop never waits
on a client: sockets are non-blocking, answers that do not fit the socket buffer wait in a
per-client buffer, and a slow or silent client only holds its own memory.
"""

from __future__ import annotations

import json
import logging
import os
import selectors
import socket
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

DEFAULT_PATH = "/run/pylvs/lvsd.sock"
MAX_REQUEST = 16 << 20


class _Client:
    __slots__ = ("sock", "inbuf", "outbuf")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.inbuf = bytearray()
        self.outbuf = bytearray()


class ControlServer:
    """Registers itself and its clients in `selector`; the key data is the callback `ready`."""

    def __init__(self, path: str, handler: Callable[[Any], dict], selector: selectors.BaseSelector) -> None:
        self.path = path
        self.handler = handler
        self.selector = selector
        os.makedirs(os.path.dirname(path) or ".", mode=0o700, exist_ok=True)
        if os.path.exists(path):
            os.unlink(path)  # a stale socket from a killed daemon
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)  # root only: the socket is created 0600
        try:
            sock.bind(path)
        finally:
            os.umask(old)
        sock.listen(64)
        sock.setblocking(False)
        self.sock = sock
        self.clients: dict[int, _Client] = {}
        selector.register(sock, selectors.EVENT_READ, self.ready)

    def ready(self, fd: int, events: int) -> None:
        if fd == self.sock.fileno():
            self._accept()
            return
        client = self.clients.get(fd)
        if client is None:
            return
        if events & selectors.EVENT_READ:
            self._read(client)
        if fd in self.clients and events & selectors.EVENT_WRITE:
            self._flush(client)

    def _accept(self) -> None:
        try:
            sock, _ = self.sock.accept()
        except (BlockingIOError, InterruptedError):
            return
        sock.setblocking(False)
        self.clients[sock.fileno()] = _Client(sock)
        self.selector.register(sock, selectors.EVENT_READ, self.ready)

    def _read(self, client: _Client) -> None:
        try:
            data = client.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data or len(client.inbuf) + len(data) > MAX_REQUEST:
            self._drop(client)
            return
        client.inbuf += data
        while True:
            end = client.inbuf.find(b"\n")
            if end < 0:
                break
            line = bytes(client.inbuf[:end])
            del client.inbuf[:end + 1]
            client.outbuf += self._answer(line)
        self._flush(client)

    def _flush(self, client: _Client) -> None:
        if client.outbuf:
            try:
                sent = client.sock.send(client.outbuf)
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError:
                self._drop(client)
                return
            del client.outbuf[:sent]
        events = selectors.EVENT_READ | (selectors.EVENT_WRITE if client.outbuf else 0)
        self.selector.modify(client.sock, events, self.ready)

    def _answer(self, line: bytes) -> bytes:
        try:
            request = json.loads(line)
        except ValueError:
            answer: dict = {"ok": False, "errno": "EINVAL", "error": "request is not valid JSON"}
        else:
            try:
                answer = self.handler(request)
            except Exception as exc:  # noqa: BLE001 - a bug in one request must not stop the daemon
                log.exception("control request failed")
                answer = {"ok": False, "errno": "EIO", "error": f"internal error: {exc}"}
        return json.dumps(answer, separators=(",", ":")).encode() + b"\n"

    def _drop(self, client: _Client) -> None:
        self.clients.pop(client.sock.fileno(), None)
        self.selector.unregister(client.sock)
        client.sock.close()

    def close(self) -> None:
        for client in list(self.clients.values()):
            self._drop(client)
        self.selector.unregister(self.sock)
        self.sock.close()
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
