"""Keep the director's kernel off the engine's traffic (nftables).

AF_PACKET taps see every frame before netfilter does, so dropping the engine's traffic in a
prerouting chain at a priority before conntrack leaves the engine its copy while the kernel neither
answers it (no RST, no ICMP) nor forwards it (no duplicates), whatever ip_forward says.
Dropped: packets to a VIP or a FULLNAT local address, and NAT replies from a real server's address
and port.
"""

from __future__ import annotations

import logging
import shutil
import subprocess

from pylvs.engine.engine import Engine
from pylvs.engine.services import Method, ip

log = logging.getLogger(__name__)

TABLE = "pylvs"
_PROTO = {6: "tcp", 17: "udp"}


class SteeringError(RuntimeError):
    pass


def _nft(script: str) -> None:
    result = subprocess.run(["nft", "-f", "-"], input=script, text=True, capture_output=True)
    if result.returncode:
        raise SteeringError(f"nft failed: {result.stderr.strip()}")


def available() -> bool:
    return shutil.which("nft") is not None


def install() -> None:
    """(Re)create the table with empty sets; a stale table from a killed lvsd is replaced."""
    _nft(f"""
table ip {TABLE}
delete table ip {TABLE}
table ip {TABLE} {{
    set vips {{ type ipv4_addr; }}
    set nat_rs {{ type ipv4_addr . inet_proto . inet_service; }}
    chain prerouting {{
        type filter hook prerouting priority -310; policy accept;
        ip daddr @vips counter drop
        ip saddr . meta l4proto . th sport @nat_rs counter drop
    }}
}}
""")


def update(engine: Engine) -> None:
    """Make the sets match the service table (called on every change)."""
    vips = sorted({ip(addr) for addr in engine.owned})  # VIPs and FULLNAT local addresses
    rs = sorted({
        f"{ip(d.addr)} . {_PROTO[svc.protocol]} . {d.port or svc.port}"
        for svc in engine.table for d in svc.dests if d.method in (Method.MASQ, Method.FULLNAT)
    })
    script = f"flush set ip {TABLE} vips\nflush set ip {TABLE} nat_rs\n"
    if vips:
        script += f"add element ip {TABLE} vips {{ {', '.join(vips)} }}\n"
    if rs:
        script += f"add element ip {TABLE} nat_rs {{ {', '.join(rs)} }}\n"
    _nft(script)


def remove() -> None:
    result = subprocess.run(["nft", "delete", "table", "ip", TABLE], capture_output=True, text=True)
    if result.returncode and "No such file" not in result.stderr:
        log.warning("could not remove nftables table %s: %s", TABLE, result.stderr.strip())
