"""From lvsd's service listing to the doctor's reports."""

from __future__ import annotations

from typing import Any

from pylvs.doctor.diagnose import diagnose
from pylvs.doctor.model import Observation, Report, Target

METHODS = {"route": "dr", "tunnel": "tun"}
ANY_PORT = 9  # a service that names no port: a SYN to "discard" still shows whether packets get in


def service_name(svc: dict[str, Any]) -> str:
    if svc.get("fwmark"):
        return f"FWM {svc['fwmark']}"
    return f"{str(svc['protocol']).upper()} {svc['addr']}:{svc['port']}"


def targets(services: list[dict[str, Any]]) -> list[Target]:
    """The DR and TUN real servers of `services` (lvsd's `list` answer), in listing order."""
    out = []
    for svc in services:
        tcp = svc.get("protocol") == "tcp"
        vip = "" if svc.get("fwmark") else str(svc["addr"])
        for d in svc.get("dests", []):
            method = METHODS.get(str(d.get("method")))
            if method is None:
                continue
            port = int(svc.get("port") or d.get("port") or 0)
            out.append(Target(service_name(svc), vip, port or ANY_PORT, tcp and bool(port), method, str(d["addr"]),
                              str(d.get("tun_type") or "ipip"), int(d.get("tun_port") or 0)))
    return out


def examine(found: list[Target], observe) -> list[Report]:
    """Probe (`observe(targets) -> observations`) and diagnose every target."""
    probed = [t for t in found if not unprobed(t)]
    observations = dict(zip(probed, observe(probed), strict=True)) if probed else {}
    return [Report(t, diagnose(t, observations.get(t) or Observation(error=unprobed(t)))) for t in found]


def unprobed(t: Target) -> str:
    """Why a target cannot be probed ("" when it can)."""
    if not t.vip:
        return "a fwmark service does not say which addresses its clients use"
    if ":" in t.rip + t.vip:
        return "IPv6 real servers are not probed yet"
    return ""


def probe_all(found: list[Target], timeout: float | None = None) -> list[Report]:
    from pylvs.doctor.probe import DEFAULT_TIMEOUT, Prober  # sockets and netlink only when probing

    return examine(found, Prober(timeout or DEFAULT_TIMEOUT).run)
