"""What `lvs-rs up` changed, kept per network namespace so that `down` can undo exactly that."""

from __future__ import annotations

import json
import os
import signal
import time
from dataclasses import asdict, dataclass, field

BASE = "/run/lvs-rs"


def default_dir() -> str:
    """One directory per network namespace: several real servers may share a host (and /run)."""
    try:
        ino = os.stat("/proc/self/ns/net").st_ino
    except OSError:
        ino = 0
    return os.path.join(BASE, f"net-{ino}")


@dataclass
class State:
    method: str = ""
    vips: list[str] = field(default_factory=list)        # VIPs this tool put on lo
    tun_type: str = ""
    tun_port: int = 0
    decap: str = ""                                      # "kernel", "userspace" or "" (DR)
    device: str = ""                                     # where tunneled packets come out
    fou_port: int = 0                                    # a kernel GUE receive port we added
    saved: dict[str, int] = field(default_factory=dict)  # "iface/key" -> value before we changed it

    @classmethod
    def load(cls, directory: str) -> State | None:
        try:
            with open(os.path.join(directory, "state.json")) as f:
                data = json.load(f)
        except (FileNotFoundError, ValueError):
            return None
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)

    def save(self, directory: str) -> None:
        os.makedirs(directory, mode=0o755, exist_ok=True)
        tmp = os.path.join(directory, "state.json.tmp")
        with open(tmp, "w") as f:
            json.dump(asdict(self), f, indent=1)
        os.replace(tmp, os.path.join(directory, "state.json"))


def remove(directory: str) -> None:
    for name in ("state.json", "decap.pid", "decap.log"):
        try:
            os.unlink(os.path.join(directory, name))
        except FileNotFoundError:
            pass
    try:
        os.rmdir(directory)
    except OSError:
        pass


# -- the userspace decapsulator's pid file ----------------------------------------------------

def pidfile(directory: str) -> str:
    return os.path.join(directory, "decap.pid")


def read_pid(directory: str) -> int | None:
    try:
        with open(pidfile(directory)) as f:
            return int(f.read().strip())
    except (FileNotFoundError, ValueError):
        return None


def is_decap(pid: int) -> bool:
    """A live (not zombie) lvs-rs decap process: a pid file may outlive its process and the pid be reused."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = f.read().split(b"\0")
        with open(f"/proc/{pid}/stat") as f:
            status = f.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return status != "Z" and any(b"lvs_rs" in a or b"lvs-rs" in a for a in argv) and b"decap" in argv


def running_decap(directory: str) -> int | None:
    pid = read_pid(directory)
    return pid if pid is not None and is_decap(pid) else None


def stop(pid: int, timeout: float = 3.0) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not is_decap(pid):
                return
            time.sleep(0.02)
