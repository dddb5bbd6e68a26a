"""Addresses and links of the current namespace, through iproute2 (`ip`), which every host has."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Callable, Sequence

Runner = Callable[[Sequence[str]], subprocess.CompletedProcess]


class NetError(RuntimeError):
    pass


def run(cmd: Sequence[str]) -> subprocess.CompletedProcess:
    return subprocess.run(list(cmd), capture_output=True, text=True)


def ip_binary() -> str:
    return shutil.which("ip") or "/usr/sbin/ip"


def ip(*args: str, runner: Runner = run, check: bool = True) -> subprocess.CompletedProcess:
    result = runner([ip_binary(), *args])
    if check and result.returncode:
        raise NetError(f"ip {' '.join(args)}: {result.stderr.strip() or result.stdout.strip()}")
    return result


def addresses(dev: str, runner: Runner = run) -> set[str]:
    """IPv4 and IPv6 addresses on `dev` (without prefix length)."""
    return _addresses(("dev", dev), runner, 4) | _addresses(("dev", dev), runner, 6)


def add_address(dev: str, addr: str, runner: Runner = run) -> bool:
    """Add addr/32 (IPv6: /128, without duplicate address detection) to dev; False if it was there already."""
    if addr in addresses(dev, runner):
        return False
    if ":" in addr:
        ip("addr", "add", f"{addr}/128", "dev", dev, "nodad", runner=runner)
    else:
        ip("addr", "add", f"{addr}/32", "dev", dev, runner=runner)
    return True


def del_address(dev: str, addr: str, runner: Runner = run) -> bool:
    if addr not in addresses(dev, runner):
        return False
    ip("addr", "del", f"{addr}/{128 if ':' in addr else 32}", "dev", dev, runner=runner)
    return True


def link_state(dev: str, runner: Runner = run) -> str | None:
    """'up', 'down', or None if there is no such link."""
    out = ip("-j", "link", "show", "dev", dev, runner=runner, check=False)
    if out.returncode or not out.stdout.strip():
        return None
    flags = json.loads(out.stdout)[0].get("flags", [])
    return "up" if "UP" in flags else "down"


def set_up(dev: str, runner: Runner = run) -> None:
    ip("link", "set", "dev", dev, "up", runner=runner)


def local_addresses(version: int = 4, runner: Runner = run) -> set[str]:
    """IPv4 (or IPv6) addresses on every interface of this namespace."""
    return _addresses((), runner, version)


def _addresses(which: tuple[str, ...], runner: Runner, version: int = 4) -> set[str]:
    out = ip("-j", f"-{version}", "addr", "show", *which, runner=runner, check=False)
    if out.returncode or not out.stdout.strip():
        return set()
    return {a["local"] for link in json.loads(out.stdout) for a in link.get("addr_info", []) if "local" in a}
