"""keepalived.conf -> `Config`: the top level, virtual_server_group, virtual_server, real_server.

Keyword tables map each keyword to a handler; `stream` reads the statements with them as
keepalived does (an unknown keyword is logged and skipped, its braces are not). A bad value is
logged and the keyword ignored, and only a missing parameter stops the parse (`ConfigError`).
Checker blocks are read by `checker_parser`, global_defs/SSL/track_file by
`global_parser`, the VRRP blocks by `vrrp_parser`, and the §3.8 corrections are made by `validate`.
"""

from __future__ import annotations

from dataclasses import astuple
from typing import Any

from pylvs.keepalived import checker_parser, global_parser, stream, vrrp_parser, vsg
from pylvs.keepalived.blocks import SKIP, VALUES, Ctx, Kw, accept, at, flag, ignored, setter, switch, text
from pylvs.keepalived.errors import ConfigError, Diagnostics
from pylvs.keepalived.extensions import dpvs_keyword, dpvs_method
from pylvs.keepalived.lexer import Line, Node, read_lines
from pylvs.keepalived.model import (
    MAX_WEIGHT,
    METHODS,
    SCHEDULERS,
    Config,
    Forwarding,
    RealServer,
    SorryServer,
    VirtualServer,
    family_of,
)
from pylvs.keepalived.values import (
    UINT_MAX,
    BadValue,
    need,
    read_netmask,
    read_script,
    read_sockaddr,
    read_timer,
    read_unsigned,
)

MAX_PERSISTENCE = 2678400


# -- forwarding method ---------------------------------------------------------------------------

def read_forwarding(node: Node, server: str, current: Forwarding | None) -> tuple[Forwarding, str | None]:
    """`NAT|DR|TUN [type ipip|gue|gre] [port N] [nocsum|csum|remcsum]` (FNAT|FULLNAT: DPVS) for a
    `server` ("virtual", "real", "sorry"). As keepalived 2.2.7's svr_forwarding_handler: an unknown
    method changes nothing (BadValue); once the method is known it is set, and a bad tunnel option
    leaves the tunnel settings as they were. Returns what to store and the message to log, if any."""
    need(node, 1)
    word = node.args[0]
    method = "FNAT" if word == "FULLNAT" else word
    if method not in METHODS:
        raise BadValue(f"PARSER : unknown [{word}] routing method for {server} server.")
    kept = Forwarding(method, *(astuple(current)[1:] if current else ()))
    tun_type, port, csum = "ipip", 0, "nocsum"
    words = node.args[1:]
    i = 0
    while i < len(words):
        option = words[i]
        if option in ("type", "port") and i + 1 == len(words):
            what = "tunnel type for" if option == "type" else "port for"
            return kept, f"Missing {what} {server} server{' gue tunnel' if option == 'port' else ''}."
        if option == "type":
            tun_type = words[i + 1]
            if tun_type not in ("ipip", "gue", "gre"):
                return kept, f"Unknown tunnel type {tun_type} for {server} server."
            i += 1
        elif option == "port":
            try:
                port = read_unsigned(words[i + 1], 1, 65535, strict=True)
            except BadValue:
                return kept, f"Invalid gue tunnel port {words[i + 1]} for {server} server."
            i += 1
        elif option in ("nocsum", "csum", "remcsum"):
            csum = option
        else:
            return kept, f"Invalid tunnel option {option} for {server} server."
        i += 1
    if (tun_type == "gue") != (port != 0):
        return kept, "gue tunnels require port, otherwise cannot have port."
    if tun_type == "ipip" and csum != "nocsum":
        return kept, "ipip tunnels do not support checksum option."
    if tun_type == "gre" and csum == "remcsum":
        return kept, "gre tunnels do not support remote checksum option."
    tunnel = {"tun_type": None if tun_type == "ipip" else tun_type, "tun_port": port or None,
              "tun_csum": None if csum == "nocsum" else csum}
    return Forwarding(method, **tunnel), None


def _forwarding(node: Node, target: Any, attr: str, server: str, ctx: Ctx, fallback: str) -> None:
    fwd, error = read_forwarding(node, server, getattr(target, attr))
    setattr(target, attr, fwd)
    dpvs_method(node, fwd, ctx, fallback)
    if error:
        raise BadValue(error)

# -- virtual_server_group ------------------------------------------------------------------------

# -- real_server ---------------------------------------------------------------------------------

def _rs_method(node: Node, rs: RealServer, ctx: Ctx) -> None:
    _forwarding(node, rs, "forwarding", "real", ctx, "the virtual server's method")


def _rs_notify(attr: str) -> Kw:
    def fn(node: Node, rs: RealServer, ctx: Ctx) -> None:
        if getattr(rs, attr) is not None:
            ctx.diags.warn(f"{attr} script already specified - ignoring {node.args[0] if node.args else ''}", node)
            return
        setattr(rs, attr, read_script(node))
    return Kw(fn, max_args=3)


def _timing(server: str) -> dict[str, Kw]:
    """The checker timing keywords of a virtual or real server, with keepalived's words for each."""
    words = {"connect_timeout": "connect_timeout {}", "delay_loop": "delay loop '{}'" if server == "virtual" else
             "delay_loop '{}'", "delay_before_retry": "delay before retry '{}'" if server == "virtual" else
             "delay_before_retry '{}'", "warmup": "warmup '{}'"}
    invalid = {key: f"{server} server {text} invalid - ignoring" for key, text in words.items()}
    return {
        "connect_timeout": setter("connect_timeout", lambda s: read_timer(s, 1, UINT_MAX),
                                  invalid=invalid["connect_timeout"]),
        "retry": setter("retry", lambda s: read_unsigned(s, 1, strict=True), invalid="retry value invalid - {}"),
        "delay_before_retry": setter("delay_before_retry", read_timer, invalid=invalid["delay_before_retry"]),
        "warmup": setter("warmup", read_timer, invalid=invalid["warmup"]),
        "delay_loop": setter("delay_loop", lambda s: read_timer(s, 1), invalid=invalid["delay_loop"]),
    }


RS = {
    "weight": setter("weight", lambda s: read_unsigned(s, 0, MAX_WEIGHT),
                     invalid=f"Real server weight {{}} is outside range 0-{MAX_WEIGHT}"),
    "lvs_method": Kw(_rs_method),
    "notify_up": _rs_notify("notify_up"),
    "notify_down": _rs_notify("notify_down"),
    "uthreshold": setter("uthreshold", read_unsigned, invalid="Invalid real_server uthreshold '{}' - ignoring"),
    "lthreshold": setter("lthreshold", read_unsigned, invalid="Invalid real_server lthreshold '{}' - ignoring"),
    "inhibit_on_failure": flag("inhibit_on_failure"),
    "alpha": flag("alpha"),
    "smtp_alert": flag("smtp_alert"),
    "virtualhost": setter("virtualhost", text),
    "snmp_name": setter("snmp_name", text),
    **_timing("real"),
}


def _server_words(node: Node) -> tuple[str, str | None]:
    need(node, 1)
    return node.args[0], node.args[1] if len(node.args) > 1 else None


def _real_server(node: Node, vs: VirtualServer, ctx: Ctx) -> RealServer:
    ip, port = _server_words(node)
    try:
        addr, number = accept(lambda: read_sockaddr(ip, port), node, ctx)
    except BadValue as exc:
        raise exc.then(f"Invalid real server ip address/port {ip}/{port or '(null)'} - skipping") from None
    rs = RealServer(addr, number, at=at(node))
    vs.real_servers.append(rs)
    return rs


def _parse_family(vs: VirtualServer) -> int | None:
    """keepalived's vs->af while reading: the address's, else set by ip_family or the first server
    that is not tunnelled."""
    return vs.family if vs.addr is not None else vs.af


def _same_family(vs: VirtualServer, addr: str, method: Forwarding | None) -> bool:
    """Whether a server fits the virtual server's family; the first one sets it (tunnels fit any)."""
    if method is not None and method.method == "TUN":
        return True
    family = _parse_family(vs)
    if family is None:
        vs.af = family_of(addr)
        return True
    return family == family_of(addr)


def _real_server_end(node: Node, vs: VirtualServer, rs: RealServer, ctx: Ctx) -> None:
    """keepalived drops a real server of the other address family at its `}`."""
    if not _same_family(vs, rs.addr, rs.forwarding or vs.forwarding):
        ctx.diags.warn(f"Address family of virtual server and real server {rs.addr} don't match - skipping real "
                       f"server.", node)
        vs.real_servers.remove(rs)


# -- virtual_server ------------------------------------------------------------------------------

def _sched(node: Node, vs: VirtualServer, ctx: Ctx) -> None:
    need(node, 1)
    if node.args[0] not in SCHEDULERS:
        raise BadValue(f"Invalid lvs_scheduler '{node.args[0]}' - ignoring")
    vs.scheduler = node.args[0]


def _sched_flag(node: Node, vs: VirtualServer, ctx: Ctx) -> None:
    name = node.keyword
    owner = name.split("-")[0] if name.startswith(("sh-", "mh-")) else None
    if owner and vs.scheduler != owner:
        raise BadValue(f"{name} only applies to {owner} scheduler - ignoring")
    if name not in vs.sched_flags:
        vs.sched_flags.append(name)


def _ops(node: Node, vs: VirtualServer, ctx: Ctx) -> None:
    vs.ops = True


def _hashed(node: Node, vs: VirtualServer, ctx: Ctx) -> None:
    vs.hashed = True


def _vs_method(node: Node, vs: VirtualServer, ctx: Ctx) -> None:
    _forwarding(node, vs, "forwarding", "virtual", ctx, "NAT")


def _persistence_timeout(node: Node, vs: VirtualServer, ctx: Ctx) -> None:
    if not node.args:
        vs.persistence_timeout = 360
        return
    try:
        vs.persistence_timeout = read_unsigned(node.args[0], 1, MAX_PERSISTENCE, strict=True)
    except BadValue as exc:
        raise exc.then("persistence_timeout invalid") from None


def _granularity(node: Node, vs: VirtualServer, ctx: Ctx) -> None:
    need(node, 1)
    vs.persistence_granularity = read_netmask(node.args[0])
    if not vs.persistence_timeout:
        vs.persistence_timeout = 360


def _protocol(node: Node, vs: VirtualServer, ctx: Ctx) -> None:
    need(node, 1)
    proto = node.args[0].upper()
    if proto not in ("TCP", "UDP", "SCTP"):
        raise BadValue(f"Unknown protocol {node.args[0]} - ignoring")
    vs.protocol = proto


def _quorum(node: Node, vs: VirtualServer, ctx: Ctx) -> None:
    need(node, 1)
    try:
        vs.quorum = accept(lambda: read_unsigned(node.args[0], 1), node, ctx)
    except BadValue as exc:
        vs.quorum = 1
        raise exc.then(f"Quorum {node.args[0]} must be in [1, {UINT_MAX}]. Setting to 1.") from None


def _vs_script(attr: str) -> Kw:
    def fn(node: Node, vs: VirtualServer, ctx: Ctx) -> None:
        if getattr(vs, attr) is not None:
            ctx.diags.warn(f"{attr} script already specified - ignoring {node.args[0] if node.args else ''}", node)
            return
        setattr(vs, attr, read_script(node))
    return Kw(fn, max_args=3)


def _sorry(node: Node, vs: VirtualServer, ctx: Ctx) -> None:
    ip, port = _server_words(node)
    try:
        addr, number = accept(lambda: read_sockaddr(ip, port), node, ctx)
    except BadValue as exc:
        raise exc.then(f"Invalid sorry server IP address {ip} - skipping") from None
    vs.sorry_server = SorryServer(addr, number, at=at(node))


def _sorry_inhibit(node: Node, vs: VirtualServer, ctx: Ctx) -> None:
    if vs.sorry_server is None:
        raise BadValue("Ignoring sorry_server inhibit used before or without sorry_server")
    vs.sorry_server.inhibit = True


def _sorry_method(node: Node, vs: VirtualServer, ctx: Ctx) -> None:
    if vs.sorry_server is None:
        raise BadValue("sorry_server forwarding used without sorry_server")
    _forwarding(node, vs.sorry_server, "forwarding", "sorry", ctx, "the virtual server's method")


def _ip_family(node: Node, vs: VirtualServer, ctx: Ctx) -> None:
    need(node, 1)
    if node.args[0] not in ("inet", "inet6"):
        raise BadValue(f"unknown address family {node.args[0]}")
    family = 4 if node.args[0] == "inet" else 6
    if _parse_family(vs) not in (None, family):
        raise BadValue(f"Virtual server specified family {node.args[0]} conflicts with server family")
    vs.ip_family = vs.af = family


VS = {
    "ip_family": Kw(_ip_family, max_args=1),
    "lvs_sched": Kw(_sched, max_args=1),
    "lb_algo": Kw(_sched, max_args=1),
    "lvs_method": Kw(_vs_method),
    "lb_kind": Kw(_vs_method),
    "hashed": Kw(_hashed, max_args=0),
    "ops": Kw(_ops, max_args=0),
    **{name: Kw(_sched_flag, max_args=0) for name in ("flag-1", "flag-2", "flag-3", "sh-port", "sh-fallback",
                                                      "mh-port", "mh-fallback")},
    "persistence_engine": setter("persistence_engine", text),
    "persistence_timeout": Kw(_persistence_timeout, max_args=1),
    "persistence_granularity": Kw(_granularity, max_args=1),
    "protocol": Kw(_protocol, max_args=1),
    "ha_suspend": switch("ha_suspend"),
    "smtp_alert": flag("smtp_alert"),
    "virtualhost": setter("virtualhost", text),
    "inhibit_on_failure": switch("inhibit_on_failure"),
    "alpha": switch("alpha"),
    "omega": switch("omega"),
    "quorum_up": _vs_script("quorum_up"),
    "quorum_down": _vs_script("quorum_down"),
    "quorum": Kw(_quorum, max_args=1),
    "hysteresis": setter("hysteresis", read_unsigned, invalid=f"Hysteresis {{}} must be in [0, {UINT_MAX}] - ignoring"),
    "weight": setter("weight", lambda s: read_unsigned(s, 1, MAX_WEIGHT),
                     invalid=f"Virtual server weight {{}} is outside range 1-{MAX_WEIGHT}"),
    "sorry_server": Kw(_sorry, max_args=2),
    "sorry_server_inhibit": Kw(_sorry_inhibit, max_args=0),
    "sorry_server_lvs_method": Kw(_sorry_method),
    "snmp_name": setter("snmp_name", text),
    "real_server": Kw(_real_server, sub={**RS, **checker_parser.KEYWORDS}, close=_real_server_end, max_args=2),
    "laddr_group_name": dpvs_keyword(setter("laddr_group_name", text)),
    "syn_proxy": dpvs_keyword(switch("syn_proxy")),
    "establish_timeout": dpvs_keyword(setter("establish_timeout", read_unsigned)),
    **{name: dpvs_keyword(Kw(ignored)) for name in ("daddr_group_name", "deny_address_group", "vip_bind_dev",
                                                    "allow_address_group", "proxy_protocol")},
    **_timing("virtual"),
}


def parse_vs_header(node: Node, ctx: Ctx) -> VirtualServer:
    first, second = _server_words(node)
    if first == "group":
        need(node, 2)
        return VirtualServer(group=second, at=at(node))
    if first == "fwmark":
        need(node, 2)
        try:
            return VirtualServer(fwmark=accept(lambda: read_unsigned(second), node, ctx), at=at(node))
        except BadValue as exc:
            raise exc.then(f"virtual server fwmark '{second}' must be in [0, {UINT_MAX}] - ignoring") from None
    try:
        addr, port = accept(lambda: read_sockaddr(first, second), node, ctx)
    except BadValue as exc:
        given = f"/port {first}/{second}" if second and second.strip("0") else f" {first}"
        raise exc.then(f"Invalid virtual server IP address{given} - skipping") from None
    return VirtualServer(addr=addr, port=port, at=at(node))


def _virtual_server(node: Node, config: Config, ctx: Ctx) -> VirtualServer:
    vs = parse_vs_header(node, ctx)
    config.virtual_servers.append(vs)
    return vs


def _virtual_server_end(node: Node, config: Config, vs: VirtualServer, ctx: Ctx) -> None:
    ss = vs.sorry_server
    if ss is not None and not _same_family(vs, ss.addr, ss.forwarding or vs.forwarding):
        ctx.diags.warn(f"Address family of virtual server and sorry server {ss.addr} don't match - skipping sorry "
                       f"server.", node)
        vs.sorry_server = None
    if _parse_family(vs) is None and vs.fwmark is not None:
        # every server is tunnelled: their family if they agree, else IPv4
        families = {family_of(s.addr) for s in [*vs.real_servers, *([ss] if vs.sorry_server else [])]}
        vs.af = families.pop() if len(families) == 1 else 4


# -- top level -----------------------------------------------------------------------------------

# Top-level keywords of keepalived 2.2.7 that its checker process does not handle (VRRP, BFD, the
# process-wide settings): their blocks are skipped whole, without a word.
INACTIVE = ("static_ipaddress", "static_routes", "static_rules", "garp_group",
            "linkbeat_interfaces", "vrrp_track_process", "interface_up_down_delays", "track_group",
            "bfd_instance", "linkbeat_use_polling", "net_namespace", "namespace_with_ipsets", "use_pid_dir",
            "instance", "child_wait_time")
# DPVS's top-level blocks: accepted and skipped, with a warning (stock keepalived does not know them).
DPVS_BLOCKS = ("daddr_group", "deny_address_group", "allow_address_group", "tunnel_group")


def _net_namespace_ipvs(node: Node, config: Config, ctx: Ctx) -> None:
    need(node, 1)
    config.global_defs.net_namespace_ipvs = node.args[0]


TOP = {
    "global_defs": Kw(global_parser.global_defs, sub=SKIP),
    "SSL": Kw(global_parser.ssl_block, sub=global_parser.SSL_KW),
    "virtual_server_group": Kw(vsg.virtual_server_group, sub=VALUES, max_args=1),
    "virtual_server": Kw(_virtual_server, sub=VS, close=_virtual_server_end, max_args=2),
    "track_file": global_parser.TRACK_FILE_KW,
    "vrrp_track_file": global_parser.TRACK_FILE_KW,
    "local_address_group": dpvs_keyword(Kw(global_parser.local_address_group, sub=VALUES, max_args=1)),
    "vrrp_instance": Kw(vrrp_parser.vrrp_instance, sub=SKIP),
    "vrrp_script": Kw(vrrp_parser.vrrp_script, sub=SKIP),
    "vrrp_sync_group": Kw(vrrp_parser.vrrp_sync_group, sub=SKIP),
    "net_namespace_ipvs": Kw(_net_namespace_ipvs, max_args=1),
    **{name: Kw(ignored, sub=SKIP) for name in INACTIVE},
    **{name: dpvs_keyword(Kw(ignored, sub=SKIP)) for name in DPVS_BLOCKS},
}


def parse_lines(lines: list[Line], diags: Diagnostics) -> Config:
    """The model of a configuration's statements, before validation."""
    ctx = Ctx(diags)
    stream.run(lines, TOP, ctx.config, ctx)
    return ctx.config


def parse_file(path: str, diags: Diagnostics | None = None, config_id: str | None = None) -> Config:
    """Read and parse a configuration (no validation). Raises ConfigError on fatal problems."""
    diags = diags if diags is not None else Diagnostics()
    files: list[str] = []
    config = parse_lines(read_lines(path, diags, config_id, files), diags)
    config.files = files
    config.diagnostics = diags.items
    return config


__all__ = ["ConfigError", "parse_file", "parse_lines", "read_forwarding"]
