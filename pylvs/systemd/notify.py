"""The sd_notify protocol: state changes as datagrams on $NOTIFY_SOCKET (man sd_notify(3)).

One datagram of newline-separated VAR=value lines on an AF_UNIX datagram socket; a path that
starts with `@` is an abstract socket. Without $NOTIFY_SOCKET (not started by systemd with
Type=notify) every call does nothing. The variable is taken out of the environment at start, so
the processes lvsd runs (health-check scripts, nft) do not inherit it.
"""

from __future__ import annotations

import logging
import os
import socket
import time

log = logging.getLogger(__name__)
ENV = "NOTIFY_SOCKET"


def monotonic_usec() -> int:
    """CLOCK_MONOTONIC in microseconds, as systemd compares reload times."""
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


class Notifier:
    def __init__(self, address: str | None) -> None:
        self.address = "\0" + address[1:] if address and address.startswith("@") else address
        self._sock: socket.socket | None = None

    @classmethod
    def from_environment(cls) -> Notifier:
        return cls(os.environ.pop(ENV, None) or None)

    @property
    def enabled(self) -> bool:
        return bool(self.address)

    def send(self, *lines: str) -> None:
        """One datagram; a failure is logged once and never stops lvsd."""
        if not self.address:
            return
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.sendto("\n".join(lines).encode(), self.address)
        except OSError as exc:
            log.warning("systemd notification not sent (%s): %s", self.address.lstrip("\0"), exc)
            self.close()
            self.address = None  # systemd is gone or was never there: stop trying

    def ready(self, status: str) -> None:
        self.send("READY=1", f"STATUS={status}")

    def reloading(self, status: str) -> None:
        self.send("RELOADING=1", f"MONOTONIC_USEC={monotonic_usec()}", f"STATUS={status}")

    def stopping(self, status: str) -> None:
        self.send("STOPPING=1", f"STATUS={status}")

    def status(self, status: str) -> None:
        self.send(f"STATUS={status}")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
