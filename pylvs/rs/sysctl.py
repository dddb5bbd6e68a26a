"""IPv4 interface sysctls of the current network namespace (/proc/sys/net is per namespace)."""

from __future__ import annotations

import os

ROOT = "/proc/sys/net/ipv4/conf"


def path(iface: str, key: str, root: str = ROOT) -> str:
    return os.path.join(root, iface, key)


def get(iface: str, key: str, root: str = ROOT) -> int | None:
    try:
        with open(path(iface, key, root)) as f:
            return int(f.read().strip())
    except (FileNotFoundError, ValueError):
        return None


def put(iface: str, key: str, value: int, root: str = ROOT) -> None:
    with open(path(iface, key, root), "w") as f:
        f.write(f"{value}\n")


def effective(iface: str, key: str, root: str = ROOT) -> int | None:
    """The value the kernel acts on: for arp_ignore, arp_announce and rp_filter, max(all, iface)."""
    values = [v for v in (get("all", key, root), get(iface, key, root)) if v is not None]
    return max(values) if values else None


def interfaces(root: str = ROOT) -> list[str]:
    """The namespace's interfaces as sysctl knows them (not 'all' or 'default')."""
    try:
        return sorted(n for n in os.listdir(root) if n not in ("all", "default"))
    except FileNotFoundError:
        return []
