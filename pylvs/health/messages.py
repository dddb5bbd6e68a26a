"""What a checker is aimed at, and the log lines keepalived prints for it (reference §2, §3)."""

from __future__ import annotations

from dataclasses import dataclass

from pylvs.keepalived.ipvs import ServiceSpec
from pylvs.keepalived.model import Checker, ConnectChecker, MiscCheck, RealServer, VirtualServer
from pylvs.keepalived.names import format_rs, format_vs, trio

UDP_KINDS = ("UDP_CHECK", "DNS_CHECK")

UP = {
    "TCP_CHECK": "TCP connection to {t} success.",
    "HTTP_GET": "Remote Web server {t} succeed on service.",
    "SSL_GET": "Remote Web server {t} succeed on service.",
    "SMTP_CHECK": "Remote SMTP server {t} succeed on service.",
    "UDP_CHECK": "UDP connection to {t} success.",
    "DNS_CHECK": "DNS_CHECK ({t}) succeed.",
    "PING_CHECK": "ICMP connection to {t} success.",
    "MISC_CHECK": "Misc check for [{rs} VS {vs}] by [{script}] succeeded.",
    "FILE_CHECK": "FILE_CHECK ({track}) for [{rs} VS {vs}] succeeded.",
}
DOWN = {
    "TCP_CHECK": "TCP_CHECK on service {t} failed after {n} retries.",
    "HTTP_GET": "HTTP_CHECK on service {t} failed after {n} retries.",
    "SSL_GET": "SSL_CHECK on service {t} failed after {n} retries.",
    "SMTP_CHECK": "SMTP_CHECK on service {t} failed after {n} retries.",
    "UDP_CHECK": "UDP_CHECK on service {t} failed after {n} retries.",
    "DNS_CHECK": "DNS_CHECK ({t}) failed after {n} retries.",
    "PING_CHECK": "ICMP CHECK on service {t} failed after {n} retries.",
    "MISC_CHECK": "Misc check for [{rs} VS {vs}] by [{script}] failed after {n} retries ({detail}).",
    "FILE_CHECK": "FILE_CHECK ({track}) for [{rs} VS {vs}] failed ({detail}).",
}


@dataclass(frozen=True)
class Target:
    """Where a checker connects and how logs name it."""

    ip: str
    port: int
    proto: str  # tcp, udp or icmp
    label: str


def checker_target(vs: VirtualServer, rs: RealServer, chk: Checker, specs: list[ServiceSpec]) -> Target:
    port = rs.port if rs.port is not None else (specs[0].port if specs else 0)
    if not isinstance(chk, ConnectChecker):
        return Target(rs.addr, port or 0, "tcp", format_rs(vs, rs))
    ip = chk.connect_ip or rs.addr
    port = chk.connect_port if chk.connect_port is not None else port or 0
    if chk.kind == "PING_CHECK":
        return Target(ip, 0, "icmp", f"[{ip}]")
    proto = "udp" if chk.kind in UDP_KINDS else "tcp"
    return Target(ip, port, proto, trio(ip, proto, port))


def fields(vs: VirtualServer, rs: RealServer, chk: Checker, target: Target) -> dict[str, str]:
    script = chk.script.text if isinstance(chk, MiscCheck) and chk.script else ""
    return {"t": target.label, "rs": format_rs(vs, rs), "vs": format_vs(vs), "script": script,
            "track": getattr(chk, "track_file", "") or ""}


def up_message(vs: VirtualServer, rs: RealServer, chk: Checker, target: Target) -> str:
    return UP[chk.kind].format(**fields(vs, rs, chk, target))


def down_message(vs: VirtualServer, rs: RealServer, chk: Checker, target: Target, detail: str) -> str:
    return DOWN[chk.kind].format(n=chk.retry, detail=detail, **fields(vs, rs, chk, target))
