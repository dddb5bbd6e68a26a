"""Top-level blocks other than the virtual servers: global_defs, SSL, track_file,
local_address_group (FULLNAT extension) and the LVS-relevant bits of vrrp_instance."""

from __future__ import annotations

from typing import Any

from pylvs.keepalived.blocks import Ctx, Kw, at, flag, run_block, setter, switch, text
from pylvs.keepalived.lexer import Node
from pylvs.keepalived.model import (
    Config,
    GroupEntry,
    LocalAddressGroup,
    SSLConfig,
    SyncDaemon,
    TrackFile,
    VrrpInstance,
)
from pylvs.keepalived.values import BadValue, need, parse_range, read_file_weight, read_int, read_ip, read_timer

LVS_MAX_TIMEOUT = 86400 * 31


# -- global_defs ---------------------------------------------------------------------------------

def _emails(node: Node, g: Any, ctx: Ctx) -> None:
    for child in node.children or []:
        g.notification_email.extend(child.words)


def _lvs_timeouts(node: Node, g: Any, ctx: Ctx) -> None:
    words = list(node.args)
    while words:
        name = words.pop(0)
        if name not in ("tcp", "tcpfin", "udp") or not words:
            raise BadValue(f"Unknown option {name} specified for lvs_timeouts")
        g.lvs_timeouts[name] = read_int(words.pop(0), 1, LVS_MAX_TIMEOUT)


def _lvs_sync_daemon(node: Node, g: Any, ctx: Ctx) -> None:
    need(node, 1)
    sd = SyncDaemon(node.args[0])
    words = list(node.args[1:])
    options = {"id": ("syncid", 0, 255), "maxlen": ("maxlen", 1, 65535 - 20 - 8),
               "port": ("port", 1, 65535), "ttl": ("ttl", 1, 255)}
    while words:
        word = words.pop(0)
        if word in options and words:
            attr, lo, hi = options[word]
            setattr(sd, attr, read_int(words.pop(0), lo, hi))
        elif word == "group" and words:
            sd.group = read_ip(words.pop(0), "lvs_sync_daemon group")
        elif word == "inst" and words:
            sd.instance = words.pop(0)
        elif sd.instance is None:
            sd.instance = word
        else:
            raise BadValue(f"Unknown option {word} specified for lvs_sync_daemon")
    g.lvs_sync_daemon = sd


def _lvs_flush_on_stop(node: Node, g: Any, ctx: Ctx) -> None:
    if node.args and node.args[0] not in ("VS",):
        raise BadValue(f"Unknown lvs_flush_on_stop type {node.args[0]}")
    g.lvs_flush_on_stop = "VS" if node.args else "ALL"


def _script_user(node: Node, g: Any, ctx: Ctx) -> None:
    need(node, 1)
    g.script_user = node.args[0]
    g.script_group = node.args[1] if len(node.args) > 1 else None


GLOBAL = {
    "router_id": setter("router_id", text),
    "notification_email": Kw(_emails, block=True),
    "notification_email_from": setter("notification_email_from", text),
    "smtp_server": setter("smtp_server", text, max_args=2),
    "smtp_connect_timeout": setter("smtp_connect_timeout", read_timer),
    "smtp_alert": flag("smtp_alert"),
    "smtp_alert_checker": flag("smtp_alert_checker"),
    "no_checker_emails": flag("no_checker_emails"),
    "checker_log_all_failures": flag("checker_log_all_failures"),
    "rs_init_notifies": switch("rs_init_notifies"),
    "lvs_flush": switch("lvs_flush"),
    "lvs_flush_on_stop": Kw(_lvs_flush_on_stop, max_args=1),
    "lvs_timeouts": Kw(_lvs_timeouts),
    "lvs_sync_daemon": Kw(_lvs_sync_daemon),
    "notify_fifo": setter("notify_fifo", text, max_args=3),
    "lvs_notify_fifo": setter("lvs_notify_fifo", text, max_args=3),
    "enable_script_security": switch("enable_script_security"),
    "script_user": Kw(_script_user, max_args=2),
    "net_namespace_ipvs": setter("net_namespace_ipvs", text),
    "nftables_ipvs": switch("nftables_ipvs"),
}

# Global keywords keepalived knows that are about VRRP, BFD, SNMP, processes...: accepted silently.
_GLOBAL_OTHER_PREFIXES = ("vrrp_", "bfd_", "snmp", "enable_snmp", "enable_traps", "dbus", "checker_",
                          "max_auto_priority", "min_auto_priority_delay", "umask", "instance",
                          "dynamic_interfaces", "default_interface", "random_seed", "process_names",
                          "process_name", "linkbeat_", "nftables", "iptables", "ipset", "notify_fifo_script",
                          "lvs_notify_fifo_script", "smtp_helo_name", "smtp_alert_vrrp", "no_email_faults",
                          "script_", "child_wait_time", "disable_local_igmp", "use_pid_dir", "net_namespace",
                          "namespace_with_ipsets", "reload_", "config_save_dir", "data_use_instance",
                          "startup_script", "shutdown_script", "fifo_write_vrrp_states_on_reload",
                          "local_name", "tmp_config_directory", "json_version", "secure_fd_passing",
                          "include_check", "keepalived_script", "vrrp", "garp_", "gna_", "lvs_netlink",
                          "network_namespace", "cpu_affinity", "rlimit", "sync_interface", "ipvs_")


def _global_other(keyword: str) -> bool:
    return keyword.startswith(_GLOBAL_OTHER_PREFIXES) or keyword.endswith(("_process_name", "_priority",
                                                                           "_no_swap", "_cpu_affinity",
                                                                           "_rlimit_rttime"))


# -- SSL, track_file, local_address_group, vrrp_instance -----------------------------------------

SSL_KW = {
    "password": setter("password", text),
    "ca": setter("ca", text),
    "certificate": setter("certificate", text),
    "key": setter("key", text),
}


def _tf_weight(node: Node, tf: TrackFile, ctx: Ctx) -> None:
    tf.weight, reverse = read_file_weight(node, f"track_file {tf.name}")
    tf.reverse = tf.reverse or reverse


def _tf_init(node: Node, tf: TrackFile, ctx: Ctx) -> None:
    tf.init_file = 0
    for word in node.args:
        if word == "overwrite":
            tf.overwrite = True
        else:
            tf.init_file = read_int(word)


TRACK_FILE = {
    "file": setter("file", text),
    "weight": Kw(_tf_weight, max_args=2),
    "init_file": Kw(_tf_init, max_args=2),
}


def _vrrp_vips(node: Node, vi: VrrpInstance, ctx: Ctx) -> None:
    for child in node.children or []:
        addr = child.keyword.split("/")[0]
        try:
            vi.virtual_ipaddress.append(read_ip(addr, "virtual_ipaddress"))
        except BadValue as exc:
            ctx.diags.error(str(exc), child)


def _vrrp_syncd(node: Node, vi: VrrpInstance, ctx: Ctx) -> None:
    need(node, 1)
    ctx.diags.warn("Specifying lvs_sync_daemon_interface against a vrrp is deprecated. "
                   "Please use global lvs_sync_daemon", node)
    vi.lvs_sync_daemon_interface = node.args[0]


VRRP = {
    "state": setter("state", text),
    "interface": setter("interface", text),
    "virtual_router_id": setter("virtual_router_id", lambda s: read_int(s, 1, 255)),
    "priority": setter("priority", lambda s: read_int(s, 1, 255)),
    "virtual_ipaddress": Kw(_vrrp_vips, block=True),
    "lvs_sync_daemon_interface": Kw(_vrrp_syncd, max_args=1),
}



def global_defs(node: Node, config: Config, ctx: Ctx) -> None:
    run_block(node.children or [], GLOBAL, config.global_defs, ctx, ignore=_global_other)


def ssl_block(node: Node, config: Config, ctx: Ctx) -> None:
    if config.ssl is not None:
        ctx.diags.warn("SSL context already specified - replacing", node)
    config.ssl = SSLConfig()
    run_block(node.children or [], SSL_KW, config.ssl, ctx)


def track_file(node: Node, config: Config, ctx: Ctx) -> None:
    need(node, 1)
    tf = TrackFile(node.args[0], at=at(node))
    run_block(node.children or [], TRACK_FILE, tf, ctx)
    if not tf.file:
        raise BadValue(f"No file set for track_file {tf.name} - ignoring")
    config.track_files[tf.name] = tf


def local_address_group(node: Node, config: Config, ctx: Ctx) -> None:
    need(node, 1)
    group = LocalAddressGroup(node.args[0], at=at(node))
    for child in node.children or []:
        try:
            if "-" in child.keyword or "/" in child.keyword:
                first, last = parse_range(child.keyword)
                entry = GroupEntry(first=first, last=last)
                group.addresses.extend((a, child.args[0] if child.args else None) for a in entry.addresses())
            else:
                group.addresses.append((read_ip(child.keyword, "local address"),
                                        child.args[0] if child.args else None))
        except BadValue as exc:
            ctx.diags.error(str(exc), child)
    config.local_address_groups[group.name] = group


def vrrp_instance(node: Node, config: Config, ctx: Ctx) -> None:
    need(node, 1)
    vi = VrrpInstance(node.args[0], at=at(node))
    run_block(node.children or [], VRRP, vi, ctx, ignore=lambda _kw: True)
    config.vrrp_instances[vi.name] = vi
