"""keepalived's way of naming services in logs: `[ip]:proto:port`, `FWM n`, `[group]:port`."""

from __future__ import annotations

from pylvs.keepalived.model import RealServer, SorryServer, VirtualServer


def proto_name(vs: VirtualServer) -> str:
    """As inet_sockaddrtotrio names it: `none` while no protocol is set, and for fwmark services."""
    return (vs.protocol or "none").lower()


def trio(addr: str, proto: str, port: int | None) -> str:
    """`inet_sockaddrtotrio`: [10.0.0.2]:tcp:80 (IPv6 addresses are bracketed the same way)."""
    return f"[{addr}]:{proto}:{port or 0}"


def format_vs(vs: VirtualServer) -> str:
    if vs.group is not None:
        return f"[{vs.group}]:{vs.port or 0}"
    if vs.fwmark is not None:
        return f"FWM {vs.fwmark}"
    return trio(vs.addr or "", proto_name(vs), vs.port)


def format_rs(vs: VirtualServer, rs: RealServer | SorryServer) -> str:
    return trio(rs.addr, proto_name(vs), rs.port)


def fifo_vs_line(vs: VirtualServer, up: bool) -> str:
    return f"VS {format_vs(vs)} {'UP' if up else 'DOWN'}"


def fifo_rs_line(vs: VirtualServer, rs: RealServer, up: bool) -> str:
    return f"RS {format_rs(vs, rs)} {format_vs(vs)} {'UP' if up else 'DOWN'}"
