"""Top-level blocks other than the virtual servers: global_defs, SSL, track_file,
local_address_group (FULLNAT extension). The VRRP blocks are `vrrp_parser`'s."""

from __future__ import annotations

from typing import Any

from pylvs.keepalived.blocks import VALUES, Ctx, Kw, at, flag, ignored, setter, switch, text
from pylvs.keepalived.lexer import Node
from pylvs.keepalived.model import (
    Config,
    GroupEntry,
    LocalAddressGroup,
    SSLConfig,
    SyncDaemon,
    TrackFile,
)
from pylvs.keepalived.stream import read_inner
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
    "notification_email": Kw(_emails, sub=VALUES),
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
    "lvs_flush_onstop": Kw(_lvs_flush_on_stop, max_args=1),
    "lvs_timeouts": Kw(_lvs_timeouts),
    "lvs_sync_daemon": Kw(_lvs_sync_daemon),
    "notify_fifo": setter("notify_fifo", text, max_args=3),
    "lvs_notify_fifo": setter("lvs_notify_fifo", text, max_args=3),
    "enable_script_security": switch("enable_script_security"),
    "script_user": Kw(_script_user, max_args=2),
    "nftables_ipvs": switch("nftables_ipvs"),
    "vrrp_version": setter("vrrp_version", lambda s: read_int(s, 2, 3, strict=True)),
    "vrrp_mcast_group4": setter("vrrp_mcast_group4", lambda s: read_ip(s, "vrrp_mcast_group4")),
    "vrrp_garp_master_delay": setter("vrrp_garp_master_delay", lambda s: read_int(s, 0, 255, strict=True)),
    "vrrp_garp_master_repeat": setter("vrrp_garp_master_repeat", lambda s: read_int(s, 1, 255, strict=True)),
}

# Every keyword of keepalived 2.2.7's global_defs (core/global_parser.c). Those pylvs has no use
# for (VRRP, SNMP, process settings...) are accepted without a word; anything else is unknown.
KEEPALIVED_GLOBAL = (
    "process_names", "process_name", "vrrp_process_name", "checker_process_name", "lvs_process_name",
    "bfd_process_name", "router_id", "notification_email_from", "smtp_server", "smtp_helo_name",
    "smtp_connect_timeout", "notification_email", "smtp_alert", "startup_script", "startup_script_timeout",
    "shutdown_script", "shutdown_script_timeout", "max_auto_priority", "min_auto_priority_delay",
    "smtp_alert_vrrp", "smtp_alert_checker", "checker_log_all_failures", "dynamic_interfaces", "no_email_faults",
    "default_interface", "disable_local_igmp", "lvs_timeouts", "lvs_flush", "lvs_flush_on_stop",
    "lvs_flush_onstop", "lvs_sync_daemon", "vrrp_mcast_group4", "vrrp_mcast_group6", "vrrp_garp_master_delay",
    "vrrp_garp_master_repeat", "vrrp_garp_master_refresh", "vrrp_garp_master_refresh_repeat",
    "vrrp_garp_lower_prio_delay", "vrrp_garp_lower_prio_repeat", "vrrp_down_timer_adverts", "vrrp_garp_interval",
    "vrrp_gna_interval", "vrrp_min_garp", "vrrp_garp_extra_if", "vrrp_vmac_garp_intvl",
    "vrrp_lower_prio_no_advert", "vrrp_higher_prio_send_advert", "vrrp_version", "vrrp_iptables", "vrrp_ipsets",
    "nftables", "nftables_priority", "nftables_ifindex", "nftables_ipvs", "nftables_ipvs_priority",
    "nftables_ipvs_start_fwmark", "nftables_counters", "vrrp_check_unicast_src", "vrrp_skip_check_adv_addr",
    "vrrp_strict", "vrrp_priority", "vrrp_no_swap", "vrrp_rt_priority", "vrrp_cpu_affinity", "vrrp_rlimit_rttime",
    "vrrp_rlimit_rtime", "notify_fifo", "notify_fifo_script", "vrrp_notify_fifo", "vrrp_notify_fifo_script",
    "vrrp_notify_priority_changes", "fifo_write_vrrp_states_on_reload", "lvs_notify_fifo",
    "lvs_notify_fifo_script", "checker_priority", "checker_no_swap", "checker_rt_priority",
    "checker_cpu_affinity", "checker_rlimit_rttime", "checker_rlimit_rtime", "bfd_priority", "bfd_no_swap",
    "bfd_rt_priority", "bfd_cpu_affinity", "bfd_rlimit_rttime", "bfd_rlimit_rtime", "snmp_socket", "enable_traps",
    "enable_snmp_vrrp", "enable_snmp_keepalived", "enable_snmp_rfc", "enable_snmp_rfcv2", "enable_snmp_rfcv3",
    "enable_snmp_checker", "enable_dbus", "dbus_service_name", "script_user", "enable_script_security",
    "vrrp_netlink_cmd_rcv_bufs", "vrrp_netlink_cmd_rcv_bufs_force", "vrrp_netlink_monitor_rcv_bufs",
    "vrrp_netlink_monitor_rcv_bufs_force", "process_monitor_rcv_bufs", "process_monitor_rcv_bufs_force",
    "lvs_netlink_cmd_rcv_bufs", "lvs_netlink_cmd_rcv_bufs_force", "lvs_netlink_monitor_rcv_bufs",
    "lvs_netlink_monitor_rcv_bufs_force", "rs_init_notifies", "no_checker_emails", "vrrp_rx_bufs_policy",
    "vrrp_rx_bufs_multiplier", "vrrp_startup_delay", "log_unknown_vrids", "vmac_prefix", "vmac_addr_prefix",
    "umask", "random_seed", "reload_check_config", "reload_time_file", "reload_repeat", "reload_file",
    "include_check", "config_save_dir", "tmp_config_directory", "data_use_instance",
)
GLOBAL = {**{name: Kw(ignored) for name in KEEPALIVED_GLOBAL}, **GLOBAL}


# -- SSL, track_file, local_address_group ------------------------------------------------------

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


def global_defs(node: Node, config: Config, ctx: Ctx) -> None:
    """keepalived's checker process skips global_defs, counting braces (its parent reads it and
    hands the values over): the block's extent is the checker's, its contents the parent's."""
    read_inner(node, GLOBAL, config.global_defs, ctx)


def ssl_block(node: Node, config: Config, ctx: Ctx) -> SSLConfig:
    if config.ssl is not None:
        ctx.diags.warn("SSL context already specified - replacing", node)
    config.ssl = SSLConfig()
    return config.ssl


def _track_file(node: Node, config: Config, ctx: Ctx) -> TrackFile:
    need(node, 1)
    return TrackFile(node.args[0], at=at(node))


def _track_file_end(node: Node, config: Config, tf: TrackFile, ctx: Ctx) -> None:
    if not tf.file:
        raise BadValue(f"No file set for track_file {tf.name} - ignoring")
    config.track_files[tf.name] = tf


TRACK_FILE_KW = Kw(_track_file, sub=TRACK_FILE, close=_track_file_end, max_args=1)


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
