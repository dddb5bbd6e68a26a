"""vrrp_instance, vrrp_script and vrrp_sync_group, read as keepalived 2.2.7's VRRP process reads
them (vrrp/vrrp_parser.c), with its messages; `check` makes the corrections of its vrrp.c
(`vrrp_complete_instance`) once the whole file is read. pylvs.vrrp runs the result.

The checker process skips these blocks by counting braces; their statements arrive here nested
(`stream.nest`), so a keyword that keepalived does not know is reported as its VRRP process
reports it, and the rest of the file is not disturbed by a malformed VRRP block.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pylvs.keepalived.blocks import Ctx, Kw, at, ignored, report
from pylvs.keepalived.errors import Diagnostics
from pylvs.keepalived.lexer import Node
from pylvs.keepalived.model import (
    Config,
    VipOptions,
    VrrpInstance,
    VrrpScript,
    VrrpSyncGroup,
    VrrpTrack,
)
from pylvs.keepalived.stream import dispatch
from pylvs.keepalived.values import BadValue, need, read_int, read_ip, read_script, read_timer

PRIO_DEFAULT, PRIO_OWNER = 100, 255
AUTH_PASS_LEN = 8


def _each(node: Node, fn: Callable[[Node], None], ctx: Ctx) -> None:
    for child in node.children or []:
        try:
            fn(child)
        except BadValue as exc:
            report(exc, child, ctx)


def _vips(attr: str) -> Kw:
    def fn(node: Node, vi: VrrpInstance, ctx: Ctx) -> None:
        def one(child: Node) -> None:
            addr, _, prefix = child.keyword.partition("/")
            addr = read_ip(addr, attr)
            options = VipOptions(int(prefix) if prefix.isdigit() and int(prefix) <= 32 else 32)
            words = list(child.args)
            while words:
                word = words.pop(0)
                if word == "dev" and words:
                    options.dev = words.pop(0)
                elif word in ("brd", "broadcast", "label", "scope", "track_group") and words:
                    words.pop(0)  # accepted; the kernel address pylvs adds has none of these
            if addr not in getattr(vi, attr):
                getattr(vi, attr).append(addr)
                vi.vip_options[addr] = options
        _each(node, one, ctx)
    return Kw(fn)


def _state(node: Node, vi: VrrpInstance, ctx: Ctx) -> None:
    need(node, 1)
    if node.args[0] not in ("MASTER", "BACKUP"):
        raise BadValue(f"({vi.name}) unknown state '{node.args[0]}', defaulting to BACKUP")
    vi.state = node.args[0]


def _priority(node: Node, vi: VrrpInstance, ctx: Ctx) -> None:
    need(node, 1)
    try:
        vi.priority = read_int(node.args[0], 1, 255, strict=True)
    except BadValue as exc:
        raise exc.then(f"({vi.name}) Priority not valid! must be between 1 & 255. Using default "
                       f"{PRIO_DEFAULT}") from None


def _vrid(node: Node, vi: VrrpInstance, ctx: Ctx) -> None:
    need(node, 1)
    try:
        vi.virtual_router_id = read_int(node.args[0], 1, 255, strict=True)
    except BadValue as exc:
        raise exc.then(f"({vi.name}) VRID '{node.args[0]}' not valid - must be between 1 & 255") from None


def _advert_int(node: Node, vi: VrrpInstance, ctx: Ctx) -> None:
    need(node, 1)
    try:
        vi.advert_int = read_timer(node.args[0], 1, 255_000_000)
    except BadValue as exc:
        raise exc.then(f"({vi.name}) Advert interval (in sec) not valid! must be between 1 & 255 seconds. "
                       f"Using default 1") from None


def _version(node: Node, vi: VrrpInstance, ctx: Ctx) -> None:
    need(node, 1)
    if node.args[0] not in ("2", "3"):
        raise BadValue(f"({vi.name}): Version must be either 2 or 3")
    vi.version = int(node.args[0])


def _preempt_delay(node: Node, vi: VrrpInstance, ctx: Ctx) -> None:
    need(node, 1)
    try:
        vi.preempt_delay = read_timer(node.args[0], 0, 1000_000_000)
    except BadValue as exc:
        raise exc.then(f"({vi.name}) Preempt_delay not valid! must be between 0-1000") from None


def _auth(node: Node, vi: VrrpInstance, ctx: Ctx) -> None:
    def one(child: Node) -> None:
        need(child, 1)
        if child.keyword == "auth_type":
            if child.args[0] not in ("PASS", "AH"):
                raise BadValue(f"({vi.name}) unknown authentication type '{child.args[0]}'")
            vi.auth_type = child.args[0]
        elif child.keyword == "auth_pass":
            if len(child.args[0]) > AUTH_PASS_LEN:
                ctx.diags.warn(f"Truncating auth_pass to {AUTH_PASS_LEN} characters", child)
            vi.auth_pass = child.args[0][:AUTH_PASS_LEN]
        else:
            ctx.diags.warn(f"Unknown keyword '{child.keyword}'", child)
    _each(node, one, ctx)


def _tracks(attr: str) -> Kw:
    def fn(node: Node, vi: VrrpInstance, ctx: Ctx) -> None:
        def one(child: Node) -> None:
            weight = None
            if child.args[:1] == ["weight"] and len(child.args) > 1:
                weight = read_int(child.args[1], -253, 253, strict=True)
            getattr(vi, attr).append(VrrpTrack(child.keyword, weight))
        _each(node, one, ctx)
    return Kw(fn)


def _script_kw(attr: str) -> Kw:
    def fn(node: Node, target: Any, ctx: Ctx) -> None:
        setattr(target, attr, read_script(node))
    return Kw(fn)


def _syncd(node: Node, vi: VrrpInstance, ctx: Ctx) -> None:
    need(node, 1)
    # keepalived's VRRP process says it in two lines
    ctx.diags.warn(f"({vi.name}) Specifying lvs_sync_daemon_interface against a vrrp is deprecated.", node)
    ctx.diags.warn("        Please use global lvs_sync_daemon", node)
    vi.lvs_sync_daemon_interface = node.args[0]


def _unsupported(node: Node, vi: VrrpInstance, ctx: Ctx) -> None:
    ctx.diags.warn(f"pylvs: ({vi.name}) {node.keyword} is not supported - adverts go to the multicast group", node)


def _set(attr: str, value: Any) -> Kw:
    def fn(node: Node, target: Any, ctx: Ctx) -> None:
        setattr(target, attr, value)
    return Kw(fn)


def _value(attr: str, reader: Callable[[str], Any]) -> Kw:
    def fn(node: Node, target: Any, ctx: Ctx) -> None:
        need(node, 1)
        setattr(target, attr, reader(node.args[0]))
    return Kw(fn)


_NOTIFY = {name: _script_kw(name) for name in ("notify", "notify_master", "notify_backup", "notify_fault")}

INSTANCE = {
    "state": Kw(_state),
    "interface": _value("interface", str),
    "virtual_router_id": Kw(_vrid),
    "priority": Kw(_priority),
    "advert_int": Kw(_advert_int),
    "version": Kw(_version),
    "virtual_ipaddress": _vips("virtual_ipaddress"),
    "virtual_ipaddress_excluded": _vips("virtual_ipaddress_excluded"),
    "nopreempt": _set("nopreempt", True),
    "preempt": _set("nopreempt", False),
    "preempt_delay": Kw(_preempt_delay),
    "authentication": Kw(_auth),
    "use_vmac": _set("use_vmac", True),
    "mcast_src_ip": _value("mcast_src_ip", lambda s: read_ip(s, "mcast_src_ip")),
    "track_interface": _tracks("track_interface"),
    "track_script": _tracks("track_script"),
    **_NOTIFY,
    "notify_stop": _script_kw("notify_stop"),
    "lvs_sync_daemon_interface": Kw(_syncd),
    "unicast_peer": Kw(_unsupported),
    "unicast_src_ip": Kw(_unsupported),
    "garp_master_delay": _value("garp_master_delay", lambda s: read_int(s, 0, 255, strict=True)),
    "garp_master_repeat": _value("garp_master_repeat", lambda s: read_int(s, 1, 255, strict=True)),
    **{name: Kw(ignored) for name in (
        "accept", "no_accept", "dont_track_primary", "smtp_alert", "debug", "skip_check_adv_addr",
        "strict_mode", "garp_master_refresh", "garp_master_refresh_repeat", "garp_lower_prio_delay",
        "garp_lower_prio_repeat", "lower_prio_no_advert", "higher_prio_send_advert", "kernel_rx_buf_size",
        "notify_priority_changes", "native_ipv6", "vmac_xmit_base", "track_file", "track_process",
        "track_bfd", "unicast_ttl", "virtual_routes", "virtual_rules",
        "old_unicast_checksum", "check_unicast_src", "no_check_unicast_src")},
}

SCRIPT = {
    "script": _script_kw("script"),
    "interval": _value("interval", lambda s: read_timer(s, 1)),
    "timeout": _value("timeout", lambda s: read_timer(s, 1)),
    "weight": _value("weight", lambda s: read_int(s, -253, 253, strict=True)),
    "rise": _value("rise", lambda s: read_int(s, 1, 2**31 - 1, strict=True)),
    "fall": _value("fall", lambda s: read_int(s, 1, 2**31 - 1, strict=True)),
    **{name: Kw(ignored) for name in ("user", "init_fail")},
}


def _group_members(node: Node, sg: VrrpSyncGroup, ctx: Ctx) -> None:
    for child in node.children or []:
        sg.group.extend(child.words)


SYNC_GROUP = {
    "group": Kw(_group_members),
    **_NOTIFY,
    **{name: Kw(ignored) for name in ("smtp_alert", "global_tracking", "sync_group_tracking_weight",
                                      "track_interface", "track_script", "track_file", "notify_stop")},
}


def vrrp_instance(node: Node, config: Config, ctx: Ctx) -> None:
    need(node, 1)
    vi = VrrpInstance(node.args[0], at=at(node))
    dispatch(node.children or [], INSTANCE, vi, ctx)
    config.vrrp_instances[vi.name] = vi


def vrrp_script(node: Node, config: Config, ctx: Ctx) -> None:
    need(node, 1)
    vs = VrrpScript(node.args[0], at=at(node))
    dispatch(node.children or [], SCRIPT, vs, ctx)
    config.vrrp_scripts[vs.name] = vs


def vrrp_sync_group(node: Node, config: Config, ctx: Ctx) -> None:
    need(node, 1)
    sg = VrrpSyncGroup(node.args[0], at=at(node))
    if node.children and not any(c.keyword in SYNC_GROUP for c in node.children):
        sg.group = [w for c in node.children for w in c.words]  # the old form: `vrrp_sync_group VG { VI_1 VI_2 }`
    else:
        dispatch(node.children or [], SYNC_GROUP, sg, ctx)
    config.vrrp_sync_groups[sg.name] = sg


# -- after the whole file: keepalived's vrrp_complete_instance ------------------------------------

def check(config: Config, diags: Diagnostics) -> None:
    """Complete and correct the VRRP configuration; drop instances keepalived would not run."""
    g = config.global_defs
    for name, vi in list(config.vrrp_instances.items()):
        if vi.virtual_router_id is None:
            diags.error(f"({name}) the virtual router id must be set", vi.at)
            del config.vrrp_instances[name]
            continue
        if vi.interface is None:
            diags.error(f"({name}) Unknown interface!", vi.at)
            del config.vrrp_instances[name]
            continue
        if vi.priority is None:
            vi.priority = PRIO_OWNER if vi.state == "MASTER" else PRIO_DEFAULT
        if vi.state == "MASTER" and vi.nopreempt:
            diags.warn(f"({name}) Warning - nopreempt will not work with initial state MASTER - clearing", vi.at)
            vi.nopreempt = False
        if vi.state == "MASTER" and vi.preempt_delay:
            diags.warn(f"({name}) Warning - preempt delay will not work with initial state MASTER - clearing", vi.at)
            vi.preempt_delay = 0.0
        version = vi.version or g.vrrp_version
        vi.version = version
        if vi.advert_int is None:
            vi.advert_int = 1.0
        if version == 2 and vi.advert_int != int(vi.advert_int):
            diags.warn(f"({name}) VRRPv2 advertisement interval {vi.advert_int:f}s must be an integer. rounding",
                       vi.at)
            vi.advert_int = float(max(1, round(vi.advert_int)))
        if version == 3 and vi.auth_type:
            diags.warn(f"({name}) authentication not supported with VRRPv3 - ignoring", vi.at)
            vi.auth_type = vi.auth_pass = None
        if vi.auth_type == "AH":
            diags.warn(f"pylvs: ({name}) auth_type AH is not supported - sending without authentication", vi.at)
            vi.auth_type = vi.auth_pass = None
        if vi.use_vmac:
            diags.warn(f"pylvs: ({name}) use_vmac is not supported - adverts leave from the interface's MAC", vi.at)
        for track in vi.track_script:
            if track.name not in config.vrrp_scripts:
                diags.warn(f"({name}) track script {track.name} not found, ignoring...", vi.at)
        vi.track_script = [t for t in vi.track_script if t.name in config.vrrp_scripts]
    for name, vs in list(config.vrrp_scripts.items()):
        if vs.script is None:
            diags.error(f"VRRP script {name} has no script - removing", vs.at)
            del config.vrrp_scripts[name]
    for name, sg in list(config.vrrp_sync_groups.items()):
        missing = [m for m in sg.group if m not in config.vrrp_instances]
        for member in missing:
            diags.error(f"Virtual router {member} specified in sync group {name} doesn't exist - ignoring", sg.at)
        sg.group = [m for m in sg.group if m not in missing]
        if len(sg.group) < 2:
            diags.warn(f"Sync group {name} has only {len(sg.group)} virtual router(s) - this probably isn't what "
                       f"you want", sg.at)
