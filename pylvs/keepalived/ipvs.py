"""Model objects -> lvsd control-protocol objects (docs/control-protocol.md), and table diffs.

A virtual_server becomes one IPVS service, or one per address/fwmark of its group. A *table*
is `{svc_key: (service, {dest_key: dest})}`; `table_diff` turns two tables into the minimal
requests, which is how both the health runtime and a reload talk to lvsd.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any

from pylvs.ipvs_uapi import SVC_F_ONEPACKET, SVC_F_PERSISTENT, SVC_F_SCHED1, SVC_F_SCHED2, SVC_F_SCHED3
from pylvs.keepalived.errors import Diagnostics
from pylvs.keepalived.model import Config, RealServer, SorryServer, VirtualServer

METHOD = {"NAT": "masq", "DR": "route", "TUN": "tunnel", "FNAT": "fullnat"}
PERSISTENT, ONEPACKET = SVC_F_PERSISTENT, SVC_F_ONEPACKET
SCHED_FLAG = {"flag-1": SVC_F_SCHED1, "flag-2": SVC_F_SCHED2, "flag-3": SVC_F_SCHED3,
              "sh-fallback": SVC_F_SCHED1, "sh-port": SVC_F_SCHED2, "mh-fallback": SVC_F_SCHED1,
              "mh-port": SVC_F_SCHED2}
SUPPORTED_PROTOCOLS = ("TCP", "UDP")  # what lvsd's engine forwards

Dest = dict[str, Any]
Table = dict[tuple, tuple[dict[str, Any], dict[tuple, Dest]]]


@dataclass(frozen=True)
class ServiceSpec:
    """One IPVS service of a virtual_server."""

    addr: str | None  # None for a fwmark service
    port: int
    protocol: str  # TCP/UDP/SCTP; for fwmark services what the checkers and logs use
    fwmark: int = 0
    family: int = 4

    @property
    def ident(self) -> dict[str, Any]:
        if self.fwmark:
            return {"fwmark": self.fwmark, "af": "inet6"} if self.family == 6 else {"fwmark": self.fwmark}
        return {"protocol": self.protocol.lower(), "addr": self.addr, "port": self.port}

    @property
    def key(self) -> tuple:
        if self.fwmark:
            return ("fwmark", self.fwmark, self.family)
        return (self.protocol.lower(), self.addr, self.port)

    def label(self) -> str:
        return f"FWM {self.fwmark}" if self.fwmark else f"[{self.addr}]:{self.protocol.lower()}:{self.port}"


def expand(vs: VirtualServer, config: Config) -> list[ServiceSpec]:
    """Every IPVS service the virtual_server stands for, in configuration order."""
    proto = vs.protocol or "TCP"
    if vs.fwmark is not None:
        return [ServiceSpec(None, 0, proto, vs.fwmark, vs.family)]
    if vs.group is None:
        return [ServiceSpec(vs.addr, vs.port or 0, proto, family=vs.family)]
    specs: list[ServiceSpec] = []
    for entry in config.virtual_server_groups[vs.group].entries:
        if entry.fwmark is not None:
            specs.append(ServiceSpec(None, 0, proto, entry.fwmark, entry.family or vs.family))
            continue
        for addr in entry.addresses():
            specs.append(ServiceSpec(addr, entry.port or 0, proto, family=ipaddress.ip_address(addr).version))
    return specs


def unsupported(spec: ServiceSpec) -> str | None:
    """Why lvsd cannot hold this service, or None."""
    if not spec.fwmark and spec.protocol not in SUPPORTED_PROTOCOLS:
        return f"protocol {spec.protocol} is not supported by lvsd"
    return None


def supported_specs(vs: VirtualServer, config: Config, diags: Diagnostics | None = None) -> list[ServiceSpec]:
    specs = []
    for spec in expand(vs, config):
        reason = unsupported(spec)
        if reason is None:
            specs.append(spec)
        elif diags is not None:
            diags.warn(f"Virtual server {spec.label()}: {reason} - skipping", vs.at)
    return specs


def service_object(vs: VirtualServer, spec: ServiceSpec) -> dict[str, Any]:
    """The `service` of add-service/edit-service."""
    flags = 0
    if vs.persistence_timeout:
        flags |= PERSISTENT
    if vs.ops:
        flags |= ONEPACKET
    for name in vs.sched_flags:
        flags |= SCHED_FLAG.get(name, 0)
    # IPv4: a dotted netmask; IPv6: a prefix length (keepalived's persistence_granularity, ipvsadm's -M)
    granularity = vs.persistence_granularity or ""
    netmask: str | int = "255.255.255.255"
    if spec.family == 6:
        netmask = int(granularity) if granularity.isdigit() else 128
    elif "." in granularity:
        netmask = granularity
    service = {**spec.ident, "scheduler": vs.scheduler or "wlc", "flags": flags,
               "timeout": vs.persistence_timeout or 0, "netmask": netmask, "pe": vs.persistence_engine or ""}
    if vs.syn_proxy:  # DPVS keepalived's syn_proxy
        service["synproxy"] = True
    return service


def dest_port(server: RealServer | SorryServer, method: str, spec: ServiceSpec) -> int:
    if spec.fwmark:
        return 0 if method in ("DR", "TUN") else (server.port or 0)
    if method in ("DR", "TUN") or server.port is None:
        return spec.port
    return server.port


def dest_object(server: RealServer | SorryServer, spec: ServiceSpec, weight: int) -> Dest:
    """The `dest` of add-dest/edit-dest."""
    fwd = server.forwarding
    method = fwd.method if fwd else "NAT"
    dest: Dest = {"addr": server.addr, "port": dest_port(server, method, spec), "method": METHOD[method],
                  "weight": weight, "u_threshold": getattr(server, "uthreshold", 0),
                  "l_threshold": getattr(server, "lthreshold", 0), "tun_type": "ipip", "tun_port": 0,
                  "tun_flags": "nocsum"}
    if fwd and method == "TUN":
        dest["tun_type"] = fwd.tun_type or "ipip"
        dest["tun_port"] = fwd.tun_port or 0
        dest["tun_flags"] = fwd.tun_csum or "nocsum"
    return dest


def dest_key(dest: Dest) -> tuple[str, int]:
    return (dest["addr"], dest["port"])


def table_diff(old: Table, new: Table) -> list[dict[str, Any]]:
    """Minimal requests that turn `old` into `new`: services first removed, then added or edited;
    within a service, destinations removed before edited before added (so a sorry server that
    replaces a real server with the same address never collides)."""
    requests: list[dict[str, Any]] = []
    for key, (service, _dests) in old.items():
        if key not in new:
            requests.append({"op": "del-service", "svc": ident(service)})
    for key, (service, dests) in new.items():
        svc = ident(service)
        if key not in old:
            requests.append({"op": "add-service", "service": service})
            requests.extend({"op": "add-dest", "svc": svc, "dest": d} for d in dests.values())
            continue
        old_service, old_dests = old[key]
        if old_service != service:
            requests.append({"op": "edit-service", "service": service})
        requests.extend(dest_diff(svc, old_dests, dests))
    return requests


def dest_diff(svc: dict[str, Any], old: dict[tuple, Dest], new: dict[tuple, Dest]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for key, dest in old.items():
        if key not in new:
            out.append({"op": "del-dest", "svc": svc, "dest": {"addr": dest["addr"], "port": dest["port"]}})
    for key, dest in new.items():
        if key in old and old[key] != dest:
            out.append({"op": "edit-dest", "svc": svc, "dest": dest})
    for key, dest in new.items():
        if key not in old:
            out.append({"op": "add-dest", "svc": svc, "dest": dest})
    return out


def ident(service: dict[str, Any]) -> dict[str, Any]:
    if service.get("fwmark"):
        return {key: service[key] for key in ("fwmark", "af") if key in service}
    return {"protocol": service["protocol"], "addr": service["addr"], "port": service["port"]}
