"""Apply control requests (docs/control-protocol.md) to an engine; pure, no I/O.

Every answer is a dict; bad input never raises out of `handle`, it becomes an error answer with
the errno and text ipvsadm would show.
"""

from __future__ import annotations

import socket
from typing import Any, Protocol

from pylvs import __version__
from pylvs.engine import tcpstate
from pylvs.engine.engine import Engine
from pylvs.engine.services import (
    DEFAULT_SCHEDULER,
    PROTO_NAMES,
    ConfigError,
    Method,
    RealServer,
    VirtualService,
    ip,
    pack_ip,
)
from pylvs.engine.table import ServiceTable
from pylvs.sync.config import BACKUP, MASTER, DaemonConfig
from pylvs.sync.proto import SYNC_GROUP, SYNC_PORT

IPVS_VERSION = "1.2.1"
CONN_TAB_SIZE = 4096
PROTOCOLS = {"tcp": 6, "udp": 17}
METHODS = {"masq": Method.MASQ, "local": Method.LOCAL, "tunnel": Method.TUNNEL, "route": Method.ROUTE,
           "fullnat": Method.FULLNAT}
METHOD_NAMES = {v: k for k, v in METHODS.items()}


class BadRequest(ConfigError):
    def __init__(self, message: str):
        super().__init__("EINVAL", message)


# -- decoding ---------------------------------------------------------------------------------

def _addr(text: Any) -> bytes:
    try:
        return pack_ip(str(text))
    except OSError:
        raise BadRequest(f"bad IPv4 address {text!r}") from None


def _int(obj: dict, name: str, default: int, lo: int = 0, hi: int = 2**32 - 1) -> int:
    value = obj.get(name, default)
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise BadRequest(f"bad {name} {value!r}")
    return value


def service_id(obj: Any) -> tuple[int, bytes, int, int]:
    """(protocol, addr, port, fwmark) of a service identity."""
    if not isinstance(obj, dict):
        raise BadRequest("missing service")
    fwmark = _int(obj, "fwmark", 0)
    if fwmark:
        return PROTOCOLS.get(str(obj.get("protocol", "tcp")), 6), b"\0\0\0\0", 0, fwmark
    proto = PROTOCOLS.get(str(obj.get("protocol", "")).lower())
    if proto is None:
        raise ConfigError("ENOPROTOOPT", "Protocol not available")
    return proto, _addr(obj.get("addr")), _int(obj, "port", 0, 0, 65535), 0


def decode_service(obj: Any) -> VirtualService:
    proto, addr, port, fwmark = service_id(obj)
    scheduler = str(obj.get("scheduler") or DEFAULT_SCHEDULER)
    proxy = str(obj.get("proxy_protocol") or "")
    if proxy not in ("", "v1", "v2"):
        raise BadRequest(f"bad proxy_protocol {proxy!r}")
    return VirtualService(
        protocol=proto, addr=addr, port=port, fwmark=fwmark, scheduler=scheduler,
        flags=_int(obj, "flags", 0), timeout=_int(obj, "timeout", 0),
        netmask=_addr(obj.get("netmask", "255.255.255.255")), proxy_protocol=proxy,
    )


def decode_dest(obj: Any) -> RealServer:
    if not isinstance(obj, dict):
        raise BadRequest("missing destination")
    method = METHODS.get(str(obj.get("method", "route")))
    if method is None:
        raise BadRequest(f"bad forwarding method {obj.get('method')!r}")
    return RealServer(
        addr=_addr(obj.get("addr")), port=_int(obj, "port", 0, 0, 65535),
        weight=_int(obj, "weight", 1, -(2**31), 2**31 - 1), method=method,
        u_threshold=_int(obj, "u_threshold", 0), l_threshold=_int(obj, "l_threshold", 0),
        tun_type=str(obj.get("tun_type", "ipip")), tun_port=_int(obj, "tun_port", 0, 0, 65535),
        tun_flags=str(obj.get("tun_flags", "nocsum")),
    )


# -- encoding ---------------------------------------------------------------------------------

def _stats(stats) -> dict[str, dict[str, int]]:
    c = stats.counters()
    r = stats.rates()
    return {
        "stats": dict(zip(("conns", "inpkts", "outpkts", "inbytes", "outbytes"), c, strict=True)),
        "rates": dict(zip(("cps", "inpps", "outpps", "inbps", "outbps"), r, strict=True)),
    }


def encode_dest(dest: RealServer) -> dict[str, Any]:
    return {
        "addr": ip(dest.addr), "port": dest.port, "method": METHOD_NAMES[dest.method],
        "weight": dest.weight, "u_threshold": dest.u_threshold, "l_threshold": dest.l_threshold,
        "tun_type": dest.tun_type, "tun_port": dest.tun_port, "tun_flags": dest.tun_flags,
        "activeconns": dest.activeconns, "inactconns": dest.inactconns,
        "persistconns": dest.persistconns, **_stats(dest.stats),
    }


def encode_service(svc: VirtualService) -> dict[str, Any]:
    out: dict[str, Any] = {"fwmark": svc.fwmark} if svc.fwmark else {
        "protocol": PROTO_NAMES[svc.protocol].lower(), "addr": ip(svc.addr), "port": svc.port}
    out.update({
        "scheduler": svc.scheduler, "flags": svc.flags, "timeout": svc.timeout,
        "netmask": ip(svc.netmask), "pe": "", "proxy_protocol": svc.proxy_protocol,
        **_stats(svc.stats), "dests": [encode_dest(d) for d in svc.dests],
        "laddrs": [encode_laddr(la) for la in svc.laddrs],
    })
    return out


def encode_laddr(laddr) -> dict[str, Any]:
    return {"addr": ip(laddr.addr), "conns": laddr.conns, "conflicts": laddr.conflicts}


def encode_conn(conn, now: float) -> dict[str, Any]:
    return {
        "protocol": PROTO_NAMES.get(conn.proto, "IP"),  # fwmark templates are protocol IP (0)
        "state": conn.state_name(), "expires": max(0, int(conn.expires - now)),
        "caddr": ip(conn.caddr), "cport": int.from_bytes(conn.cport, "big"),
        "vaddr": ip(conn.vaddr), "vport": int.from_bytes(conn.vport, "big"),
        "daddr": ip(conn.daddr), "dport": int.from_bytes(conn.dport, "big"),
        "template": conn.template,
    }


# -- operations -------------------------------------------------------------------------------

def _apply(engine: Engine, table: ServiceTable, req: dict, now: float, dry_run: bool) -> Any:
    op = req.get("op")
    if op == "add-service":
        table.add_service(decode_service(req.get("service")))
    elif op == "edit-service":
        table.edit_service(decode_service(req.get("service")))
    elif op == "del-service":
        table.del_service(*service_id(req.get("svc")))
    elif op == "flush":
        table.flush()
    elif op in ("add-dest", "edit-dest", "del-dest"):
        svc = table.find(*service_id(req.get("svc")))
        if svc is None:
            raise ConfigError("ESRCH", "Service not defined")  # ipvs_strerror's text for dest ops
        dest = decode_dest(req.get("dest"))
        if op == "add-dest":
            table.add_dest(svc, dest)
        elif op == "edit-dest":
            table.edit_dest(svc, dest)
        else:
            table.del_dest(svc, dest.addr, dest.port)
    elif op in ("add-laddr", "del-laddr"):
        svc = table.get(*service_id(req.get("svc")))
        if op == "add-laddr":
            table.add_laddr(svc, _addr(req.get("laddr")))
        else:
            table.del_laddr(svc, _addr(req.get("laddr")))
    elif op == "get-laddr":
        services = [table.get(*service_id(req["svc"]))] if req.get("svc") else list(table)
        return {"services": [
            {**encode_service(s), "laddrs": [encode_laddr(la) for la in s.laddrs]} for s in services]}
    elif op == "zero":
        targets = [table.get(*service_id(req["svc"]))] if req.get("svc") else list(table)
        if not dry_run:
            for svc in targets:
                svc.stats.zero()
                for dest in svc.dests:
                    dest.stats.zero()
            if not req.get("svc"):
                engine.total.zero()
    elif op == "set-timeout":
        values = [_int(req, name, 0, 0, 2678400) for name in ("tcp", "tcpfin", "udp")]
        if not dry_run:
            s = engine.settings
            if values[0]:
                s.tcp_timeouts[tcpstate.ESTABLISHED] = values[0]
            if values[1]:
                s.tcp_timeouts[tcpstate.FIN_WAIT] = values[1]
            if values[2]:
                s.udp_timeout = values[2]
    elif op == "get-timeout":
        s = engine.settings
        return {"tcp": s.tcp_timeouts[tcpstate.ESTABLISHED], "tcpfin": s.tcp_timeouts[tcpstate.FIN_WAIT],
                "udp": s.udp_timeout}
    elif op == "get-info":
        return {"version": IPVS_VERSION, "size": CONN_TAB_SIZE, "services": len(table),
                "daemon": f"lvsd {__version__}"}
    elif op == "list":
        services = [table.get(*service_id(req["svc"]))] if req.get("svc") else list(table)
        return {"services": [encode_service(s) for s in services]}
    elif op == "list-conns":
        return {"conns": [encode_conn(c, now) for c in engine.conns.conns()]}
    elif op == "get-drops":
        return dict(engine.drops)
    elif op in DAEMON_OPS:
        raise BadRequest(f"{op} cannot be part of a batch")  # handle() routes it when it comes alone
    elif op == "batch":
        ops = req.get("ops")
        if not isinstance(ops, list):
            raise BadRequest("batch needs a list of ops")
        return _batch(engine, ops, now)
    else:
        raise BadRequest(f"unknown op {op!r}")
    return None


def shadow_copy(table: ServiceTable) -> ServiceTable:
    """A configuration-only copy of the table, to try a batch on before touching the real one."""
    copy = ServiceTable(methods=table.methods)
    for svc in table:
        clone = VirtualService(svc.protocol, svc.addr, svc.port, svc.scheduler, svc.flags, svc.timeout,
                               svc.netmask, svc.fwmark, proxy_protocol=svc.proxy_protocol)
        copy.add_service(clone)
        for laddr in svc.laddrs:
            copy.add_laddr(clone, laddr.addr)
        for dest in reversed(svc.dests):
            copy.add_dest(clone, RealServer(dest.addr, dest.port, dest.weight, dest.method,
                                            dest.u_threshold, dest.l_threshold, dest.tun_type,
                                            dest.tun_port, dest.tun_flags))
    return copy


def _batch(engine: Engine, ops: list, now: float) -> Any:
    shadow = shadow_copy(engine.table)
    for i, sub in enumerate(ops):
        try:
            if not isinstance(sub, dict) or sub.get("op") == "batch":
                raise BadRequest("bad op in batch")
            _apply(engine, shadow, sub, now, dry_run=True)
        except ConfigError as exc:
            exc.line = i  # type: ignore[attr-defined]
            raise
    return [_apply(engine, engine.table, sub, now, dry_run=False) for sub in ops]


# -- sync daemons (ipvs.md §5) ----------------------------------------------------------------

DAEMON_OPS = ("start-daemon", "stop-daemon", "get-daemon")


class DaemonControl(Protocol):
    """The sync daemons lvsd runs (pylvs.io.sync_daemons); refusals are ConfigErrors."""

    def start(self, config: DaemonConfig) -> None: ...

    def stop(self, state: str) -> None: ...

    def list(self) -> list[dict[str, Any]]: ...


def _daemon_state(obj: Any) -> str:
    state = obj.get("state") if isinstance(obj, dict) else None
    if state not in (MASTER, BACKUP):
        raise BadRequest(f"bad daemon state {state!r}")
    return state


def decode_daemon(obj: Any) -> DaemonConfig:
    """A start-daemon request's `daemon`; 0 or absent means the kernel's default."""
    state = _daemon_state(obj)
    ifname = obj.get("mcast_ifn")
    if not isinstance(ifname, str) or not 0 < len(ifname) < 16:
        raise BadRequest(f"bad mcast_ifn {ifname!r}")
    group = str(obj.get("mcast_group") or SYNC_GROUP)
    if ":" in group:
        raise ConfigError("EAFNOSUPPORT", "Operation not supported with specified address family")
    if not 224 <= _addr(group)[0] < 240:
        raise BadRequest(f"mcast_group {group} is not a multicast address")
    return DaemonConfig(state, ifname, syncid=_int(obj, "syncid", 0, 0, 255),
                        sync_maxlen=_int(obj, "sync_maxlen", 0, 0, 65535), mcast_group=socket.inet_ntoa(_addr(group)),
                        mcast_port=_int(obj, "mcast_port", 0, 0, 65535) or SYNC_PORT,
                        mcast_ttl=_int(obj, "mcast_ttl", 0, 0, 255) or 1)


def _daemon_op(daemons: DaemonControl | None, req: dict) -> Any:
    op = req["op"]
    if op == "get-daemon":
        return {"daemons": daemons.list() if daemons is not None else []}
    if daemons is None:
        raise ConfigError("EOPNOTSUPP", "Connection synchronisation is not available here")
    if op == "start-daemon":
        daemons.start(decode_daemon(req.get("daemon")))
    else:
        daemons.stop(_daemon_state(req.get("daemon")))
    return None


def handle(engine: Engine, req: Any, now: float = 0.0, daemons: DaemonControl | None = None) -> dict[str, Any]:
    """Apply one request; the answer is always a dict, never an exception. `daemons` serves the
    sync daemon ops; without it they are not supported (and none is running)."""
    if not isinstance(req, dict):
        return {"ok": False, "errno": "EINVAL", "error": "request must be a JSON object"}
    try:
        if req.get("op") in DAEMON_OPS:
            return {"ok": True, "result": _daemon_op(daemons, req)}
        return {"ok": True, "result": _apply(engine, engine.table, req, now, dry_run=False)}
    except ConfigError as exc:
        answer = {"ok": False, "errno": exc.errno_name, "error": str(exc)}
        if hasattr(exc, "line"):
            answer["line"] = exc.line
        return answer
    except (OSError, KeyError, ValueError, TypeError, AttributeError) as exc:
        return {"ok": False, "errno": "EINVAL", "error": f"bad request: {exc}"}
