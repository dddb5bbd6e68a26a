"""Client side of the lvsd control socket: one JSON object per line each way (docs/control-protocol.md)."""

from __future__ import annotations

import errno
import json
import os
import socket
from typing import Any

# "@NAME" is an abstract Unix socket: the kernel scopes abstract names to the network namespace, so
# every namespace has its own lvsd at the default address (as IPVS is per namespace) and no file
# is left behind. Any other string is a filesystem path.
DEFAULT_PATH = "@pylvs/lvsd"
ENV_VAR = "PYLVS_CONTROL"
CAP_NET_ADMIN = 12
DEFAULT_TIMEOUT = 30.0  # seconds; a wedged daemon must not hang scripts forever


class ControlError(Exception):
    """The conversation with lvsd failed (not an error answer: those come back as dicts)."""


class ConnectFailed(ControlError):
    """lvsd could not be reached; `reason` is worded like ipvsadm's ipvs_strerror()."""

    def __init__(self, path: str, err: OSError):
        super().__init__(f"{path}: {err.strerror or err}")
        self.path = path
        self.errno = err.errno
        if err.errno in (errno.EACCES, errno.EPERM):
            self.reason = "Permission denied (you must be root)"
        elif err.errno in (errno.ENOENT, errno.ECONNREFUSED, errno.ENOTSOCK, errno.ENOTDIR):
            self.reason = "Protocol not available"  # what ipvsadm says when IPVS is missing
        else:
            self.reason = err.strerror or str(err)


def socket_path(explicit: str | None = None) -> str:
    """--control PATH, else $PYLVS_CONTROL, else the default path."""
    return explicit or os.environ.get(ENV_VAR) or DEFAULT_PATH


def sockaddr(address: str) -> str:
    """The address to bind or connect: "@NAME" is the abstract name NAME, anything else a path."""
    return "\0" + address[1:] if address.startswith("@") else address


def has_cap_net_admin(pid: int | str = "self") -> bool:
    """Whether a process has CAP_NET_ADMIN in its effective set (from /proc)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("CapEff:"):
                    return bool(int(line.split()[1], 16) >> CAP_NET_ADMIN & 1)
    except (OSError, ValueError, IndexError):
        pass
    return False


class Client:
    """A connection to lvsd; `request` may be called several times."""

    def __init__(self, path: str | None = None, timeout: float | None = DEFAULT_TIMEOUT):
        self.path = socket_path(path)
        if self.path.startswith("@") and os.geteuid() != 0 and not has_cap_net_admin():
            # lvsd would refuse us (an abstract socket has no file mode to do it): fail as ipvsadm does
            raise ConnectFailed(self.path, PermissionError(errno.EPERM, os.strerror(errno.EPERM)))
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.settimeout(timeout)
        try:
            self._sock.connect(sockaddr(self.path))
        except OSError as err:
            self._sock.close()
            raise ConnectFailed(self.path, err) from None
        self._reader = self._sock.makefile("rb")

    def request(self, obj: dict[str, Any]) -> dict[str, Any]:
        line = json.dumps(obj, separators=(",", ":")) + "\n"
        try:
            try:
                self._sock.sendall(line.encode())
            except BrokenPipeError:
                pass  # lvsd may have refused us (and said why) before reading: read its answer
            reply = self._reader.readline()
        except OSError as err:
            raise ControlError(f"lvsd control connection failed: {err}") from None
        if not reply:
            raise ControlError("lvsd closed the control connection")
        try:
            answer = json.loads(reply)
        except ValueError:
            raise ControlError("lvsd sent an unreadable answer") from None
        if not isinstance(answer, dict):
            raise ControlError("lvsd sent an unreadable answer")
        return answer

    def close(self) -> None:
        self._reader.close()
        self._sock.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def request(obj: dict[str, Any], path: str | None = None) -> dict[str, Any]:
    """One request on a fresh connection."""
    with Client(path) as client:
        return client.request(obj)
