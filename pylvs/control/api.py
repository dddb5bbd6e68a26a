"""Apply control requests (docs/control-protocol.md) to an engine; pure, no I/O.

Every answer is a dict; bad input never raises out of `handle`, it becomes an error answer with
the errno and text ipvsadm would show.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any, Protocol

from pylvs import __version__
from pylvs.engine import tcpstate
from pylvs.engine.conntrack import DIR_IN
from pylvs.engine.engine import Engine
from pylvs.engine.services import (
    DEFAULT_SCHEDULER,
    ConfigError,
    RealServer,
    VirtualService,
    ip,
    pack_ip,
    prefix_len,
    prefix_mask,
)
from pylvs.engine.table import ServiceTable
from pylvs.ipvs_uapi import AF_INET6, PROTO_NAMES, PROTO_SCTP, PROTO_TCP, PROTO_UDP, Method
from pylvs.sync.config import BACKUP, MASTER, DaemonConfig
from pylvs.sync.proto import SYNC_GROUP, SYNC_PORT

IPVS_VERSION = "1.2.1"
CONN_TAB_SIZE = 4096
PROTOCOLS = {"tcp": PROTO_TCP, "udp": PROTO_UDP, "sctp": PROTO_SCTP}  # what the engine forwards
METHODS = {method.name.lower(): method for method in Method}  # the protocol's method names
PERSISTENCE_ENGINES = ("sip",)  # the kernel's ip_vs_pe_<name> modules


class BadRequest(ConfigError):
    def __init__(self, message: str):
        super().__init__("EINVAL", message)


# -- decoding ---------------------------------------------------------------------------------

def _addr(text: Any) -> bytes:
    try:
        return pack_ip(str(text))
    except OSError:
        raise BadRequest(f"bad address {text!r}") from None


def _netmask(obj: dict, v6: bool) -> bytes:
    """The persistence netmask: dotted IPv4 text, or for IPv6 services a prefix length (as ipvsadm's -M)."""
    value = obj.get("netmask")
    if v6:
        prefix = 128 if value in (None, "") else value
        if not isinstance(prefix, int) or isinstance(prefix, bool) or not 1 <= prefix <= 128:
            raise BadRequest(f"bad IPv6 netmask {value!r}")
        return prefix_mask(prefix, 16)
    mask = _addr("255.255.255.255" if value in (None, "") else value)
    if len(mask) != 4:
        raise BadRequest(f"bad IPv4 netmask {value!r}")
    return mask


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
    if fwmark:  # the family of a fwmark service is that of its (zero) address, as the kernel's svc->af
        zero = bytes(16) if obj.get("af") in ("inet6", AF_INET6) else bytes(4)
        return PROTOCOLS.get(str(obj.get("protocol", "tcp")), PROTO_TCP), zero, 0, fwmark
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
        netmask=_netmask(obj, len(addr) == 16), pe=str(obj.get("pe") or ""), proxy_protocol=proxy,
        synproxy=bool(obj.get("synproxy", False)),
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
        "addr": ip(dest.addr), "port": dest.port, "method": dest.method.name.lower(),
        "weight": dest.weight, "u_threshold": dest.u_threshold, "l_threshold": dest.l_threshold,
        "tun_type": dest.tun_type, "tun_port": dest.tun_port, "tun_flags": dest.tun_flags,
        "activeconns": dest.activeconns, "inactconns": dest.inactconns,
        "persistconns": dest.persistconns, **_stats(dest.stats),
    }


def encode_service(svc: VirtualService) -> dict[str, Any]:
    out: dict[str, Any] = {"fwmark": svc.fwmark} if svc.fwmark else {
        "protocol": PROTO_NAMES[svc.protocol].lower(), "addr": ip(svc.addr), "port": svc.port}
    v6 = len(svc.addr) == 16
    if svc.fwmark and v6:
        out["af"] = "inet6"
    out.update({
        "scheduler": svc.scheduler, "flags": svc.flags, "timeout": svc.timeout,
        "netmask": prefix_len(svc.netmask) if v6 else ip(svc.netmask),
        "pe": svc.pe, "proxy_protocol": svc.proxy_protocol, "synproxy": svc.synproxy,
        **_stats(svc.stats), "dests": [encode_dest(d) for d in svc.dests],
        "laddrs": [encode_laddr(la) for la in svc.laddrs],
    })
    return out


def encode_laddr(laddr) -> dict[str, Any]:
    return {"addr": ip(laddr.addr), "conns": laddr.conns, "conflicts": laddr.conflicts}


LISTING_PIECE = 500  # table entries per piece of a streamed listing: a few ms of the packet loop each


def conns_json(engine: Engine, now: float) -> Iterator[bytes]:
    """The connection table as pieces of a JSON array's body (`list-conns` answered piece by piece).

    The table is copied at once as references (a C-speed copy of its dicts); each piece encodes the
    next connections, skipping those that went meanwhile, so the packet loop runs between pieces, as it
    does between reads of the kernel's /proc/net/ip_vs_conn."""
    entries = [(tmpl, DIR_IN) for tmpl in engine.conns.templates.values()]
    for tab in engine.conns.by_proto.values():
        entries += tab.values()  # (conn, direction): each connection once in DIR_IN
    sep = b""
    for start in range(0, len(entries), LISTING_PIECE):
        piece = [json.dumps(encode_conn(c, now), separators=(",", ":"))
                 for c, direction in entries[start:start + LISTING_PIECE] if direction == DIR_IN and not c.dead]
        if piece:
            yield sep + ",".join(piece).encode()
            sep = b","


def encode_conn(conn, now: float) -> dict[str, Any]:
    return {
        "protocol": PROTO_NAMES.get(conn.proto, "IP"),  # fwmark templates are protocol IP (0)
        "state": conn.state_name(), "expires": max(0, int(conn.expires - now)),
        "caddr": ip(conn.caddr), "cport": int.from_bytes(conn.cport, "big"),
        "vaddr": ip(conn.vaddr), "vport": int.from_bytes(conn.vport, "big"),
        "daddr": ip(conn.daddr), "dport": int.from_bytes(conn.dport, "big"),
        "template": conn.template,
        **({"pe_name": conn.svc.pe, "pe_data": conn.pe_data.decode("latin-1")} if conn.pe_data else {}),
    }


# -- operations -------------------------------------------------------------------------------


@dataclass
class Call:
    """One operation being applied: its request, and the table it works on (the engine's, or a
    shadow copy while an atomic batch is tried with `dry_run`)."""

    control: Control
    table: ServiceTable
    req: dict
    now: float
    dry_run: bool = False

    @property
    def engine(self) -> Engine:
        return self.control.engine


@dataclass(frozen=True)
class Op:
    run: Callable[[Call], Any]
    atomic: bool = False  # honours dry_run, so it may be part of an all-or-nothing `batch`


def _check_pe(table: ServiceTable, svc: VirtualService, exists: bool) -> None:
    """An unknown persistence engine is ENOENT, found after the service's own (non)existence."""
    if svc.pe and svc.pe not in PERSISTENCE_ENGINES and \
            (table.find(svc.protocol, svc.addr, svc.port, svc.fwmark) is not None) == exists:
        raise ConfigError("ENOENT", "Scheduler or persistence engine not found")


def _add_service(call: Call) -> None:
    svc = decode_service(call.req.get("service"))
    _check_pe(call.table, svc, exists=False)
    call.table.add_service(svc)


def _edit_service(call: Call) -> None:
    svc = decode_service(call.req.get("service"))
    _check_pe(call.table, svc, exists=True)
    call.table.edit_service(svc)


def _del_service(call: Call) -> None:
    call.table.del_service(*service_id(call.req.get("svc")))


def _svc_for_dest(call: Call) -> VirtualService:
    svc = call.table.find(*service_id(call.req.get("svc")))
    if svc is None:
        raise ConfigError("ESRCH", "Service not defined")  # ipvs_strerror's text for dest ops
    return svc


def _add_dest(call: Call) -> None:
    call.table.add_dest(_svc_for_dest(call), decode_dest(call.req.get("dest")))


def _edit_dest(call: Call) -> None:
    call.table.edit_dest(_svc_for_dest(call), decode_dest(call.req.get("dest")))


def _del_dest(call: Call) -> None:
    svc = _svc_for_dest(call)
    dest = decode_dest(call.req.get("dest"))
    call.table.del_dest(svc, dest.addr, dest.port)


def _laddr_op(call: Call) -> None:
    svc = call.table.get(*service_id(call.req.get("svc")))
    if call.req["op"] == "add-laddr":
        call.table.add_laddr(svc, _addr(call.req.get("laddr")))
    else:
        call.table.del_laddr(svc, _addr(call.req.get("laddr")))


def _services(call: Call) -> list[VirtualService]:
    """The request's `svc` if it names one, else every service."""
    return [call.table.get(*service_id(call.req["svc"]))] if call.req.get("svc") else list(call.table)


def _zero(call: Call) -> None:
    targets = _services(call)
    if call.dry_run:
        return
    for svc in targets:
        svc.stats.zero()
        for dest in svc.dests:
            dest.stats.zero()
    if not call.req.get("svc"):
        call.engine.total.zero()


def _set_timeout(call: Call) -> None:
    tcp, tcpfin, udp = (_int(call.req, name, 0, 0, 2678400) for name in ("tcp", "tcpfin", "udp"))
    if call.dry_run:
        return
    s = call.engine.settings
    if tcp:
        s.tcp_timeouts[tcpstate.ESTABLISHED] = tcp
    if tcpfin:
        s.tcp_timeouts[tcpstate.FIN_WAIT] = tcpfin
    if udp:
        s.udp_timeout = udp


def _get_timeout(call: Call) -> dict[str, int]:
    s = call.engine.settings
    return {"tcp": s.tcp_timeouts[tcpstate.ESTABLISHED], "tcpfin": s.tcp_timeouts[tcpstate.FIN_WAIT],
            "udp": s.udp_timeout}


def _get_info(call: Call) -> dict[str, Any]:
    return {"version": IPVS_VERSION, "size": CONN_TAB_SIZE, "services": len(call.table),
            "daemon": f"lvsd {__version__}"}


def _op_list(req: dict) -> list:
    ops = req.get("ops")
    if not isinstance(ops, list):
        raise BadRequest(f"{req.get('op')} needs a list of ops")
    return ops


def _batch(call: Call) -> list[Any]:
    """All or nothing: every op is tried on a shadow copy of the table first."""
    ops = _op_list(call.req)
    shadow = shadow_copy(call.engine.table)
    for index, sub in enumerate(ops):
        try:
            name = sub.get("op") if isinstance(sub, dict) else None
            op = call.control.ops.get(name) if isinstance(name, str) else None
            if op is not None and not op.atomic:
                raise BadRequest(f"{name} cannot be part of a batch")
            call.control.apply(sub, shadow, call.now, dry_run=True)
        except ConfigError as exc:
            raise OpFailed(index, exc) from None
    return [call.control.apply(sub, call.engine.table, call.now) for sub in ops]


def _sequence(call: Call) -> list[dict[str, Any]]:
    """Each op on its own, in order, as `ipvsadm -R` applies its lines: a refused op answers with
    its error and the ones after it still run. The result is one answer per op."""
    answers = []
    for sub in _op_list(call.req):
        if isinstance(sub, dict) and sub.get("op") in ("batch", "sequence"):
            answers.append(_refusal(BadRequest(f"{sub['op']} cannot be part of a sequence")))
        else:
            answers.append(call.control.handle(sub, call.now))
    return answers


def _no_daemons(call: Call) -> None:
    raise ConfigError("EOPNOTSUPP", "Connection synchronisation is not available here")


OPS: dict[str, Op] = {
    "add-service": Op(_add_service, atomic=True),
    "edit-service": Op(_edit_service, atomic=True),
    "del-service": Op(_del_service, atomic=True),
    "flush": Op(lambda c: c.table.flush(), atomic=True),
    "add-dest": Op(_add_dest, atomic=True),
    "edit-dest": Op(_edit_dest, atomic=True),
    "del-dest": Op(_del_dest, atomic=True),
    "add-laddr": Op(_laddr_op, atomic=True),
    "del-laddr": Op(_laddr_op, atomic=True),
    "zero": Op(_zero, atomic=True),
    "set-timeout": Op(_set_timeout, atomic=True),
    "get-timeout": Op(_get_timeout, atomic=True),
    "get-info": Op(_get_info, atomic=True),
    "list": Op(lambda c: {"services": [encode_service(s) for s in _services(c)]}, atomic=True),
    "get-laddr": Op(lambda c: {"services": [encode_service(s) for s in _services(c)]}, atomic=True),
    "list-conns": Op(lambda c: {"conns": [encode_conn(conn, c.now) for conn in c.engine.conns.conns()]},
                     atomic=True),
    "get-drops": Op(lambda c: dict(c.engine.drops), atomic=True),
    "batch": Op(_batch),
    "sequence": Op(_sequence),
    # until the sync daemons register theirs (pylvs.io.sync_daemons): none runs, none can start
    "get-daemon": Op(lambda c: {"daemons": []}),
    "start-daemon": Op(_no_daemons),
    "stop-daemon": Op(_no_daemons),
}


def shadow_copy(table: ServiceTable) -> ServiceTable:
    """A configuration-only copy of the table, to try a batch on before touching the real one.
    Copied with dataclasses.replace, so every configuration field comes along."""
    copy = ServiceTable(methods=table.methods)
    for svc in table:
        clone = copy.add_service(replace(svc, dests=[], laddrs=[], sched=None))
        for laddr in svc.laddrs:
            clone.laddrs.append(replace(laddr))
        for dest in reversed(svc.dests):
            copy.add_dest(clone, replace(dest))
    return copy


class OpFailed(ConfigError):
    """An op of a batch was refused; `index` says which."""

    def __init__(self, index: int, cause: ConfigError):
        super().__init__(cause.errno_name, str(cause))
        self.index = index


def _refusal(exc: Exception) -> dict[str, Any]:
    if isinstance(exc, ConfigError):
        answer: dict[str, Any] = {"ok": False, "errno": exc.errno_name, "error": str(exc)}
        if isinstance(exc, OpFailed):
            answer["line"] = exc.index
        return answer
    return {"ok": False, "errno": "EINVAL", "error": f"bad request: {exc}"}


class Control:
    """The operations one daemon answers: OPS, plus those its other components register (the
    director's `reload` and `health`, the sync daemons' `start-daemon`, `stop-daemon`, `get-daemon`)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.ops: dict[str, Op] = dict(OPS)

    def register(self, name: str, handler: Callable[[dict], Any]) -> None:
        """Answer op `name` with `handler(request)`; it raises ConfigError to refuse. Registered ops
        are not part of atomic batches (they cannot be tried on a shadow table)."""
        self.ops[name] = Op(lambda call: handler(call.req))

    def apply(self, req: Any, table: ServiceTable, now: float, dry_run: bool = False) -> Any:
        if not isinstance(req, dict):
            raise BadRequest("request must be a JSON object")
        name = req.get("op")
        op = self.ops.get(name) if isinstance(name, str) else None
        if op is None:
            raise BadRequest(f"unknown op {name!r}")
        return op.run(Call(self, table, req, now, dry_run))

    def handle(self, req: Any, now: float = 0.0) -> dict[str, Any]:
        """Apply one request; the answer is always a dict, never an exception."""
        try:
            return {"ok": True, "result": self.apply(req, self.engine.table, now)}
        except (ConfigError, OSError, KeyError, ValueError, TypeError, AttributeError) as exc:
            return _refusal(exc)


def handle(engine: Engine, req: Any, now: float = 0.0) -> dict[str, Any]:
    """Apply one request with the built-in ops only (no sync daemons, no keepalived)."""
    return Control(engine).handle(req, now)


# -- sync daemons (ipvs.md §5): what SyncDaemons.register serves ---------------------------------


def daemon_state(obj: Any) -> str:
    state = obj.get("state") if isinstance(obj, dict) else None
    if state not in (MASTER, BACKUP):
        raise BadRequest(f"bad daemon state {state!r}")
    return state


def decode_daemon(obj: Any) -> DaemonConfig:
    """A start-daemon request's `daemon`; 0 or absent means the kernel's default."""
    state = daemon_state(obj)
    ifname = obj.get("mcast_ifn")
    if not isinstance(ifname, str) or not 0 < len(ifname) < 16:
        raise BadRequest(f"bad mcast_ifn {ifname!r}")
    group = str(obj.get("mcast_group") or SYNC_GROUP)
    packed = _addr(group)  # an IPv6 group (ff00::/8) makes IPv6 sync sockets, as in the kernel
    if not (packed[0] == 0xFF if len(packed) == 16 else 224 <= packed[0] < 240):
        raise BadRequest(f"mcast_group {group} is not a multicast address")
    return DaemonConfig(state, ifname, syncid=_int(obj, "syncid", 0, 0, 255),
                        sync_maxlen=_int(obj, "sync_maxlen", 0, 0, 65535), mcast_group=ip(packed),
                        mcast_port=_int(obj, "mcast_port", 0, 0, 65535) or SYNC_PORT,
                        mcast_ttl=_int(obj, "mcast_ttl", 0, 0, 255) or 1)


class DaemonControl(Protocol):
    """The sync daemons lvsd runs (pylvs.io.sync_daemons); refusals are ConfigErrors."""

    def start(self, config: DaemonConfig) -> None: ...

    def stop(self, state: str) -> None: ...

    def list(self) -> list[dict[str, Any]]: ...


def register_daemons(control: Control, daemons: DaemonControl) -> None:
    """Serve the sync daemon ops from `daemons`."""
    control.register("start-daemon", lambda req: daemons.start(decode_daemon(req.get("daemon"))))
    control.register("stop-daemon", lambda req: daemons.stop(daemon_state(req.get("daemon"))))
    control.register("get-daemon", lambda req: {"daemons": daemons.list()})
