"""The control socket: JSON lines over a Unix stream socket, served from the packet loop.

Address: "@NAME" (the default, `@pylvs/lvsd`) is an abstract socket. The kernel scopes abstract
names to the network namespace, so each namespace has its own lvsd at the default address (IPVS is
per namespace too) and `ip netns exec X lvsadm` reaches the lvsd of X. Abstract sockets have no
file mode, so every connection is checked with SO_PEERCRED: root or CAP_NET_ADMIN, as for IPVS.
A filesystem path (`--control PATH`) is created 0600 and is never replaced while it still answers.

The loop never waits on a client, and no client can make lvsd grow without bound: a few
connections (idle ones are dropped to make room), one request line of a bounded size, a bound on
what all partial requests hold together, one answer at a time per client (a client that does not
read its answer is not read from, and is dropped when it stalls), idle clients timed out.
No input ends the daemon: a request that fails gets an error answer.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import selectors
import socket
import stat
import struct
import time
from collections.abc import Callable, Iterator
from typing import Any

from pylvs.control.client import has_cap_net_admin, sockaddr

log = logging.getLogger(__name__)

MAX_CLIENTS = 16
MAX_REQUEST = 16 << 20   # one request line; a 10,000-rule `lvsadm -R` batch is 2.2 MB
MAX_BUFFERED = 32 << 20  # unfinished requests of all clients together
IDLE_TIMEOUT = 60.0      # seconds without a byte from a client that has nothing pending
STALL_TIMEOUT = 10.0     # seconds without progress sending an answer to a client
RECV_SIZE = 1 << 18
_UCRED = struct.Struct("3i")  # pid, uid, gid
DENIED = "Permission denied (you must be root)"  # ipvsadm's words for EPERM


class ControlSocketError(Exception):
    """The control socket could not be opened; the message says why and what to do."""


class Streamed:
    """An answer too big to build at once: `head`, then the pieces `parts` yields, then `tail`, make one
    line. The server takes a piece whenever the client has read what came before, so building a large
    answer (a connection listing) is spread over rounds of the packet loop instead of stalling it."""

    def __init__(self, head: bytes, parts: Iterator[bytes], tail: bytes) -> None:
        self.head, self.parts, self.tail = head, parts, tail


def _answer_line(answer: dict) -> bytes:
    return json.dumps(answer, separators=(",", ":")).encode() + b"\n"


def _error(errno_name: str, text: str) -> bytes:
    return _answer_line({"ok": False, "errno": errno_name, "error": text})


def peer_allowed(sock: socket.socket) -> bool:
    """Root, or a process with CAP_NET_ADMIN (what the kernel asks of IPVS's netlink users)."""
    pid, uid, _gid = _UCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size))
    return uid == 0 or has_cap_net_admin(pid)


def answering(address: str) -> bool:
    """Whether something accepts connections at `address` (a connect test, at most a second)."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(sockaddr(address))
    except (ConnectionRefusedError, FileNotFoundError, NotADirectoryError):
        return False
    except OSError:
        return True  # a full backlog or a slow listener is still a listener
    finally:
        probe.close()
    return True


def check_free(address: str) -> None:
    """Refuse, with what to do, an address where another lvsd (or anything else) answers."""
    if not answering(address):
        return
    if address.startswith("@"):
        raise ControlSocketError(f"another lvsd is running in this network namespace (control socket {address} "
                                 "answers): stop it first, or give this one another --control")
    raise ControlSocketError(f"another lvsd answers on {address}: stop it first or choose another --control")


def _clear_stale(path: str) -> None:
    """Remove a socket file left by a killed lvsd; refuse if something still answers there."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise ControlSocketError(f"control socket {path} exists and is not a socket: "
                                 "remove it or choose another --control")
    check_free(path)
    os.unlink(path)  # nobody listens: stale


class _Client:
    __slots__ = ("sock", "inbuf", "outbuf", "partial", "since", "closing", "writing", "stream")

    def __init__(self, sock: socket.socket, now: float) -> None:
        self.sock = sock
        self.inbuf = bytearray()
        self.outbuf = bytearray()
        self.partial = 0      # bytes after the last newline received
        self.since = now      # last progress in either direction
        self.closing = False  # drop once the answer is out
        self.writing = False  # registered for EVENT_WRITE (not reading) while an answer waits
        self.stream: Streamed | None = None  # the rest of a streamed answer, built as it is read


class ControlServer:
    """Registers itself and its clients in `selector`; the key data is the callback `ready`.

    `expire(now)` drops idle and stalled clients; call it every few seconds (it also runs when a
    new client finds every slot taken)."""

    def __init__(self, path: str, handler: Callable[[Any], dict | Streamed], selector: selectors.BaseSelector,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.path = path
        self.handler = handler
        self.selector = selector
        self.clock = clock
        self.clients: dict[int, _Client] = {}
        self.refused = 0   # connections turned away (permission, too many clients)
        self.dropped = 0   # clients dropped for a limit (size, idle, stalled)
        self._inode: int | None = None  # the socket file we created, if any
        self.sock = self._listen(path)
        selector.register(self.sock, selectors.EVENT_READ, self.ready)

    def _listen(self, path: str) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            if path.startswith("@"):
                try:
                    sock.bind(sockaddr(path))
                except OSError as exc:
                    if exc.errno != errno.EADDRINUSE:
                        raise
                    check_free(path)  # says who answers
                    raise ControlSocketError(f"control socket {path} is in use") from None
            else:
                os.makedirs(os.path.dirname(path) or ".", mode=0o700, exist_ok=True)
                _clear_stale(path)
                old = os.umask(0o177)  # root only: the socket is created 0600
                try:
                    sock.bind(path)
                finally:
                    os.umask(old)
                self._inode = os.stat(path).st_ino
            sock.listen(64)
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        return sock

    # -- events -----------------------------------------------------------------------------

    def ready(self, fd: int, events: int) -> None:
        client = self.clients.get(fd)
        try:
            if fd == self.sock.fileno():
                self._accept()
            elif client is None:
                return
            elif events & selectors.EVENT_WRITE:
                self._flush(client)
                if self._alive(client) and not client.outbuf and client.stream is None:
                    self._process(client)  # requests that arrived while the answer was waiting
            elif events & selectors.EVENT_READ:
                self._read(client)
        except Exception:  # noqa: BLE001 - no client may stop the daemon
            log.exception("control socket failed; dropping the client")
            if client is not None:
                self._drop(client)

    def _alive(self, client: _Client) -> bool:
        return self.clients.get(client.sock.fileno()) is client

    def _accept(self) -> None:
        try:
            sock, _ = self.sock.accept()
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:  # e.g. out of file descriptors: the client sees its connect fail
            log.warning("control socket: accept failed: %s", exc)
            return
        sock.setblocking(False)
        now = self.clock()
        refusal = None
        if not peer_allowed(sock):
            refusal = _error("EPERM", DENIED)
        elif len(self.clients) >= MAX_CLIENTS:
            self.expire(now)
            if len(self.clients) >= MAX_CLIENTS:
                refusal = _error("EBUSY", f"lvsd is busy: {MAX_CLIENTS} control connections are open")
        if refusal is not None:
            self.refused += 1
            try:
                sock.send(refusal)
            except OSError:
                pass
            sock.close()
            return
        self.clients[sock.fileno()] = _Client(sock, now)
        self.selector.register(sock, selectors.EVENT_READ, self.ready)

    def _read(self, client: _Client) -> None:
        try:
            data = client.sock.recv(RECV_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._drop(client)
            return
        client.since = self.clock()
        last = data.rfind(b"\n")  # only new data is searched: a long line is not rescanned
        client.partial = len(data) - last - 1 if last >= 0 else client.partial + len(data)
        client.inbuf += data
        if last >= 0:
            self._process(client)
            if not self._alive(client):
                return
        if client.partial > MAX_REQUEST:
            self._refuse(client, "EMSGSIZE", f"request too large (lvsd accepts up to {MAX_REQUEST >> 20} MB per line)")
        elif sum(len(c.inbuf) for c in self.clients.values()) > MAX_BUFFERED:
            self._refuse(client, "EBUSY", "lvsd is busy: too much unfinished control input")

    def _process(self, client: _Client) -> None:
        """Answer complete lines, one answer at a time: a client that does not read gets no more."""
        while not client.outbuf and client.stream is None and not client.closing:
            end = client.inbuf.find(b"\n")
            if end < 0:
                break
            line = bytes(client.inbuf[:end])
            del client.inbuf[:end + 1]
            answer = self._answer(line)
            if isinstance(answer, Streamed):
                client.stream = answer
                client.outbuf += answer.head
                self._next_part(client)
            else:
                client.outbuf += answer
            self._flush(client)
            if not self._alive(client):
                return

    def _refuse(self, client: _Client, errno_name: str, text: str) -> None:
        log.warning("control client dropped: %s", text)
        self.dropped += 1
        client.inbuf.clear()
        client.outbuf += _error(errno_name, text)
        client.closing = True
        self._flush(client)

    def _next_part(self, client: _Client) -> None:
        """One more piece of a streamed answer (or its end), at most one per round of the loop."""
        stream = client.stream
        try:
            client.outbuf += next(stream.parts)
        except StopIteration:
            client.outbuf += stream.tail
            client.stream = None
        except Exception as exc:  # noqa: BLE001 - a failing listing must not stop the daemon
            log.exception("streamed control answer failed")
            client.stream = None
            client.inbuf.clear()
            client.outbuf += b"\n" + _error("EIO", f"internal error: {exc}")
            client.closing = True

    def _flush(self, client: _Client) -> None:
        if not client.outbuf and client.stream is not None:
            self._next_part(client)
        if client.outbuf:
            try:
                sent = client.sock.send(client.outbuf)
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError:
                self._drop(client)
                return
            if sent:
                del client.outbuf[:sent]
                client.since = self.clock()
        if client.closing and not client.outbuf:
            self._drop(client)
            return
        writing = bool(client.outbuf) or client.stream is not None
        if writing != client.writing:
            client.writing = writing
            self.selector.modify(client.sock, selectors.EVENT_WRITE if writing else selectors.EVENT_READ,
                                 self.ready)

    def _answer(self, line: bytes) -> bytes | Streamed:
        try:
            request = json.loads(line)
        except (ValueError, RecursionError):  # RecursionError: nested deeper than the parser goes
            return _error("EINVAL", "request is not valid JSON")
        try:
            answer = self.handler(request)
            return answer if isinstance(answer, Streamed) else _answer_line(answer)
        except Exception as exc:  # noqa: BLE001 - a bug in one request must not stop the daemon
            log.exception("control request failed")
            return _error("EIO", f"internal error: {exc}")

    # -- limits and shutdown ----------------------------------------------------------------

    def expire(self, now: float | None = None) -> None:
        """Drop clients idle for IDLE_TIMEOUT, or not reading their answer for STALL_TIMEOUT."""
        now = self.clock() if now is None else now
        for client in list(self.clients.values()):
            limit = STALL_TIMEOUT if client.outbuf else IDLE_TIMEOUT
            if now - client.since > limit:
                log.info("control client dropped: %s", "not reading its answer" if client.outbuf else "idle")
                self.dropped += 1
                self._drop(client)

    def _drop(self, client: _Client) -> None:
        if self.clients.pop(client.sock.fileno(), None) is not None:
            self.selector.unregister(client.sock)
        client.sock.close()

    def close(self) -> None:
        for client in list(self.clients.values()):
            self._drop(client)
        self.selector.unregister(self.sock)
        self.sock.close()
        if self._inode is None:
            return
        try:  # only our own socket file: never one a later lvsd bound
            if os.stat(self.path).st_ino == self._inode:
                os.unlink(self.path)
        except FileNotFoundError:
            pass
