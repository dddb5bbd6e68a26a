"""keepalived's `validate_check_config`: defaults, inheritance and the §3.8 corrections.

Runs after parsing and mutates the model in place, so that afterwards every value a runtime
needs is concrete: scheduler, method, protocol, ports, weights, and each checker's timing.
"""

from __future__ import annotations

import copy

from pylvs.keepalived.errors import Diagnostics
from pylvs.keepalived.model import (
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_DELAY_LOOP,
    DEFAULT_PERSISTENCE_TIMEOUT,
    DEFAULT_SCHEDULER,
    MAX_WEIGHT,
    BfdCheck,
    Checker,
    Config,
    ConnectChecker,
    DnsCheck,
    FileCheck,
    Forwarding,
    GlobalDefs,
    HttpCheck,
    MiscCheck,
    RealServer,
    SorryServer,
    SyncDaemon,
    VirtualServer,
    family_of,
)
from pylvs.keepalived.names import format_rs, format_vs

# Per-type defaults when neither the RS nor the VS sets them (reference §2.1).
DEFAULT_RETRY = {"DNS_CHECK": 3, "MISC_CHECK": 0, "FILE_CHECK": 0}
HTTP_DELAY_BEFORE_RETRY = 3.0
DEFAULT_DELAY_BEFORE_RETRY = 1.0


def first(*values):
    for value in values:
        if value is not None:
            return value
    return None


def _zero_port(vs: VirtualServer, config: Config) -> bool:
    if vs.group is not None:
        group = config.virtual_server_groups[vs.group]
        return any(not e.port for e in group.entries if e.fwmark is None)
    return vs.fwmark is None and not vs.port


def _service_defaults(vs: VirtualServer, config: Config, diags: Diagnostics) -> None:
    """keepalived 2.2.7's checks of a virtual server itself, in its order and words."""
    name = format_vs(vs)
    if vs.ha_suspend and _uses_fwmark(vs, config):
        diags.error(f"Virtual server {name}: cannot use ha_suspend with fwmarks - clearing ha_suspend", vs.at)
        vs.ha_suspend = False
    if _uses_addresses(vs, config):
        if vs.protocol is None:
            diags.warn(f"Virtual server {name}: no protocol set - defaulting to UDP", vs.at)
            vs.protocol = "UDP"
        if vs.ops and vs.protocol != "UDP":
            diags.warn(f"Virtual server {name}: one packet scheduling requires UDP - resetting", vs.at)
            vs.ops = False
    if _zero_port(vs, config) and not vs.persistence_timeout:
        diags.warn(f"Virtual server {name}: zero port only valid for persistent services - setting", vs.at)
        vs.persistence_timeout = DEFAULT_PERSISTENCE_TIMEOUT
    if vs.protocol is not None and not _uses_addresses(vs, config):
        diags.warn(f"Warning: Virtual server {name}: protocol specified for fwmark - protocol will be ignored",
                   vs.at)
        vs.protocol = None
    name = format_vs(vs)  # with the protocol as now set
    if vs.scheduler is None:
        diags.warn(f"Virtual server {name}: no scheduler set, setting default '{DEFAULT_SCHEDULER}'", vs.at)
        vs.scheduler = DEFAULT_SCHEDULER
    if vs.laddr_group_name and vs.laddr_group_name not in config.local_address_groups:
        diags.error(f"Virtual server {name}: local_address_group {vs.laddr_group_name} not found", vs.at)


def _uses_fwmark(vs: VirtualServer, config: Config) -> bool:
    if vs.group is not None:
        return any(e.fwmark is not None for e in config.virtual_server_groups[vs.group].entries)
    return vs.fwmark is not None


def _uses_addresses(vs: VirtualServer, config: Config) -> bool:
    if vs.group is not None:
        return any(e.fwmark is None for e in config.virtual_server_groups[vs.group].entries)
    return vs.fwmark is None


def _default_method(vs: VirtualServer, diags: Diagnostics) -> Forwarding:
    """The virtual server's method for a server without its own; NAT, said once, when unset."""
    if vs.forwarding is None:
        diags.warn(f"Virtual server {format_vs(vs)}: no forwarding method set, setting default NAT", vs.at)
        vs.forwarding = Forwarding("NAT")
    return copy.deepcopy(vs.forwarding)


def _resolve_port(vs: VirtualServer, server: RealServer | SorryServer, method: str, what: str,
                  diags: Diagnostics) -> None:
    """NAT: a missing port is the VS port; DR/TUN: the port must be the VS port (fwmark: 0)."""
    if vs.group is not None:
        return  # resolved per service entry when translated
    if method not in ("DR", "TUN"):
        if vs.fwmark is None and server.port is None:
            server.port = vs.port or 0
        return
    if vs.fwmark is not None:
        if server.port:
            detail = f"real server {format_rs(vs, server)}" if what == "real server" else "sorry server"
            lead = "fwmark virtual server" if what == "real server" else "virtual server"
            diags.warn(f"WARNING - {lead} {format_vs(vs)}, {detail} has port specified - clearing", server.at)
        server.port = 0
    elif server.port is None:
        server.port = vs.port or 0
    elif server.port != (vs.port or 0):
        detail = f"real server {format_rs(vs, server)}" if what == "real server" else "sorry server"
        diags.warn(f"WARNING - virtual server {format_vs(vs)} and {detail} ports don't match - resetting", server.at)
        server.port = vs.port or 0


def _checker(chk: Checker, rs: RealServer, vs: VirtualServer, g: GlobalDefs, config: Config,
             diags: Diagnostics) -> bool:
    """Resolve a checker's inherited values; False drops it."""
    if isinstance(chk, BfdCheck):
        diags.warn(f"BFD_CHECK for real server {format_rs(vs, rs)} is not supported - ignoring checker", chk.at)
        return False
    if isinstance(chk, FileCheck):
        tf = config.track_files.get(chk.track_file or "")
        if tf is None:
            diags.error(f"track_file {chk.track_file} not found - ignoring FILE_CHECK", chk.at)
            return False
        if chk.weight is None:
            chk.weight, chk.reverse = tf.weight, tf.reverse
        chk.retry, chk.alpha, chk.delay_loop = 0, False, first(rs.delay_loop, vs.delay_loop, DEFAULT_DELAY_LOOP)
        chk.delay_before_retry, chk.warmup = 0.0, 0.0
        return True
    chk.delay_loop = first(chk.delay_loop, rs.delay_loop, vs.delay_loop, DEFAULT_DELAY_LOOP)
    chk.retry = first(chk.retry, rs.retry, vs.retry, DEFAULT_RETRY.get(chk.kind, 1))
    if isinstance(chk, HttpCheck):
        dbr_default = HTTP_DELAY_BEFORE_RETRY
    elif isinstance(chk, DnsCheck):
        dbr_default = chk.delay_loop
    else:
        dbr_default = DEFAULT_DELAY_BEFORE_RETRY
    chk.delay_before_retry = first(chk.delay_before_retry, rs.delay_before_retry, vs.delay_before_retry,
                                   dbr_default)
    chk.warmup = first(chk.warmup, rs.warmup, vs.warmup, chk.delay_loop)
    chk.alpha = bool(first(chk.alpha, rs.alpha, vs.alpha, False))
    chk.log_all_failures = bool(first(chk.log_all_failures, g.checker_log_all_failures))
    if isinstance(chk, ConnectChecker):
        chk.connect_timeout = first(chk.connect_timeout, rs.connect_timeout, vs.connect_timeout,
                                    DEFAULT_CONNECT_TIMEOUT)
    if isinstance(chk, HttpCheck):
        chk.virtualhost = first(chk.virtualhost, rs.virtualhost, vs.virtualhost)
    if isinstance(chk, MiscCheck):
        chk.misc_timeout = first(chk.misc_timeout, chk.delay_loop)
    return True


def _real_servers(vs: VirtualServer, g: GlobalDefs, config: Config, diags: Diagnostics) -> None:
    name = format_vs(vs)
    kept: list[RealServer] = []
    written: set[tuple[str, int | None]] = set()
    for rs in vs.real_servers:
        if (rs.addr, rs.port) in written:
            diags.warn(f"VS {name}: real server {format_rs(vs, rs)} is duplicated - removing second rs", rs.at)
            continue
        written.add((rs.addr, rs.port))
        rs.forwarding = rs.forwarding or _default_method(vs, diags)
        rs.weight = vs.weight if rs.weight is None else rs.weight
        rs.inhibit_on_failure = bool(first(rs.inhibit_on_failure, vs.inhibit_on_failure))
        rs.alpha = bool(first(rs.alpha, vs.alpha))
        kept.append(rs)
    vs.real_servers = kept
    if vs.sorry_server is not None:
        ss = vs.sorry_server
        ss.forwarding = ss.forwarding or _default_method(vs, diags)
        for rs in kept:
            if (rs.addr, rs.port) == (ss.addr, ss.port):
                ss.inhibit = bool(rs.inhibit_on_failure)  # one IPVS entry, one inhibit setting
    if vs.forwarding is None:
        vs.forwarding = Forwarding("NAT")  # every server has its own: keepalived says nothing


def _ports(vs: VirtualServer, diags: Diagnostics) -> None:
    """Ports as keepalived corrects them, then the duplicates that only the correction reveals
    (keepalived would add the same destination twice; pylvs keeps the first)."""
    seen: set[tuple[str, int | None]] = set()
    kept: list[RealServer] = []
    for rs in vs.real_servers:
        assert rs.forwarding is not None
        written = rs.port
        _resolve_port(vs, rs, rs.forwarding.method, "real server", diags)
        _checker_ports(vs, rs, written, diags)
        if (rs.addr, rs.port) in seen:
            diags.warn(f"pylvs: VS {format_vs(vs)}: real server {format_rs(vs, rs)} is duplicated once its port is "
                       f"set - removing second rs", rs.at)
            continue
        seen.add((rs.addr, rs.port))
        kept.append(rs)
    vs.real_servers = kept
    ss = vs.sorry_server
    if ss is not None:
        assert ss.forwarding is not None
        _resolve_port(vs, ss, ss.forwarding.method, "sorry server", diags)


def _checker_ports(vs: VirtualServer, rs: RealServer, written: int | None, diags: Diagnostics) -> None:
    """A checker without connect_port connects to the real server's port as written: keepalived
    copies the address when the checker is read, before the port rules above change it. Without
    a written port keepalived checks port 0; pylvs checks the port the rules gave, and says so."""
    for chk in rs.checkers:
        if not isinstance(chk, ConnectChecker) or chk.kind == "PING_CHECK" or chk.connect_port is not None:
            continue
        if written is not None:
            chk.connect_port = written
            continue
        checked = f"pylvs checks port {rs.port}" if rs.port else "so does pylvs"
        diags.warn(f"pylvs: {chk.kind} for real server {format_rs(vs, rs)} has no port: keepalived checks port 0, "
                   f"{checked} - set connect_port", chk.at)


def _quorum(vs: VirtualServer, diags: Diagnostics) -> None:
    name = format_vs(vs)
    total = min(sum(max(0, rs.weight or 0) for rs in vs.real_servers), MAX_WEIGHT)
    if vs.quorum > total:
        diags.warn(f"Warning - quorum {vs.quorum} for {name} exceeds total weight of real servers {total}, reducing "
                   f"quorum to {total}", vs.at)
        vs.quorum = total
    if vs.hysteresis and vs.hysteresis >= vs.quorum:
        new = max(0, vs.quorum - 1)
        diags.warn(f"Virtual server {name}: hysteresis {vs.hysteresis} >= quorum {vs.quorum}; setting hysteresis "
                   f"to {new}", vs.at)
        vs.hysteresis = new


def _checkers(vs: VirtualServer, g: GlobalDefs, config: Config, diags: Diagnostics) -> None:
    for rs in vs.real_servers:
        rs.checkers = [c for c in rs.checkers if _checker(c, rs, vs, g, config, diags)]


def _linked(vs: VirtualServer, config: Config, diags: Diagnostics) -> bool:
    """keepalived's link_vsg_to_vs, before the checks: a group virtual server needs its group, and
    the group's address families must fit the virtual server's."""
    if vs.group is None:
        return True
    group = config.virtual_server_groups.get(vs.group)
    name = format_vs(vs)
    if group is None:
        diags.error(f"Virtual server group {vs.group} specified but not configured - ignoring virtual server {name}",
                    vs.at)
        return False
    have = {family_of(e.first) if e.first else e.family for e in group.entries} - {None}
    if have == {4, 6} and vs.af is not None:
        diags.error(f"{vs.group}: virtual server group with IPv4 & IPv6 doesn't match virtual server {name} - "
                    f"ignoring", vs.at)
        return False
    if vs.af is not None and have and vs.af not in have:
        diags.error(f"{vs.group}: address family doesn't match virtual server {name} - ignoring", vs.at)
        return False
    if len(have) == 1:
        vs.af = vs.af or have.pop()
    elif vs.af is None and any(e.fwmark is not None and e.family is None for e in group.entries):
        diags.warn(f"{vs.group}: Virtual server {name} address family cannot be determined, defaulting to IPv4",
                   vs.at)
    return True


def validate(config: Config, diags: Diagnostics | None = None) -> Config:
    diags = diags if diags is not None else Diagnostics()
    g = config.global_defs
    if g.lvs_sync_daemon is None:
        for vi in config.vrrp_instances.values():
            if vi.lvs_sync_daemon_interface:
                g.lvs_sync_daemon = SyncDaemon(vi.lvs_sync_daemon_interface, vi.name)
                break
    kept: list[VirtualServer] = []
    for vs in [vs for vs in config.virtual_servers if _linked(vs, config, diags)]:
        if not vs.real_servers:
            diags.warn(f"Virtual server {format_vs(vs)} has no real servers - ignoring", vs.at)
            continue
        _service_defaults(vs, config, diags)
        _real_servers(vs, g, config, diags)
        _quorum(vs, diags)
        _ports(vs, diags)
        kept.append(vs)
    config.virtual_servers = []
    keys: set[tuple] = set()
    for vs in kept:
        if vs.key in keys:
            diags.error(f"pylvs: virtual server {format_vs(vs)} is duplicated - ignoring the second one", vs.at)
            continue
        keys.add(vs.key)
        _checkers(vs, g, config, diags)
        config.virtual_servers.append(vs)
    config.diagnostics = diags.items
    return config
