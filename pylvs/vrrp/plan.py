"""From keepalived.conf's VRRP blocks to what pylvs.vrrp runs: a `Router` of instances and, per
instance, what the I/O side needs (interface, addresses, notify scripts, the sync daemon role)."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass, field

from pylvs.keepalived import Config, Diagnostics, vrrp_parser
from pylvs.keepalived.model import Script, SyncDaemon, VipOptions
from pylvs.vrrp.packet import AUTH_NONE, AUTH_PASS
from pylvs.vrrp.router import Router, ScriptState, Tracked
from pylvs.vrrp.state import Instance, InstanceConfig


@dataclass
class InstancePlan:
    name: str
    interface: str
    addresses: dict[str, VipOptions]  # virtual_ipaddress and _excluded: all are claimed
    notify: dict[str, Script | None] = field(default_factory=dict)  # "", MASTER, BACKUP, FAULT, STOP
    group_notify: dict[str, Script | None] = field(default_factory=dict)
    group: str | None = None


@dataclass
class Plan:
    router: Router
    instances: dict[str, InstancePlan]
    scripts: dict[str, tuple[Script, float, float | None]]  # name -> script, interval, timeout
    sync_daemon: SyncDaemon | None = None  # driven by the instance it names (keepalived's lvs_sync_daemon)
    mcast_group: str = "224.0.0.18"
    service_ranges: tuple[tuple[int, int], ...] = ()  # the virtual servers' VIPs: the engine's, not the kernel's

    def is_service_address(self, addr: str) -> bool:
        value = int(ipaddress.ip_address(addr))
        return any(lo <= value <= hi for lo, hi in self.service_ranges)

    def interfaces(self) -> set[str]:
        return {p.interface for p in self.instances.values()}


def build(config: Config, primary_ip: Callable[[str], str], diags: Diagnostics | None = None) -> Plan:
    """`primary_ip(ifname)`: the interface's first IPv4 address (adverts' source and tie-breaker)."""
    diags = diags if diags is not None else Diagnostics()
    vrrp_parser.check(config, diags)
    g = config.global_defs
    instances: dict[str, Instance] = {}
    plans: dict[str, InstancePlan] = {}
    tracking: dict[str, list[Tracked]] = {}
    for name, vi in config.vrrp_instances.items():
        cfg = InstanceConfig(
            name=name, vrid=vi.virtual_router_id, priority=vi.priority, advert_int=vi.advert_int,
            version=vi.version, addresses=tuple(vi.virtual_ipaddress), primary_ip=vi.mcast_src_ip or
            primary_ip(vi.interface), preempt=not vi.nopreempt, preempt_delay=vi.preempt_delay,
            auth_type=AUTH_PASS if vi.auth_type == "PASS" else AUTH_NONE,
            auth_data=(vi.auth_pass or "").encode() if vi.auth_type == "PASS" else b"",
            garp_delay=float(vi.garp_master_delay if vi.garp_master_delay is not None else g.vrrp_garp_master_delay),
            garp_repeat=vi.garp_master_repeat or g.vrrp_garp_master_repeat)
        instances[name] = Instance(cfg)
        addresses = {a: vi.vip_options.get(a, VipOptions()) for a in [*vi.virtual_ipaddress,
                                                                      *vi.virtual_ipaddress_excluded]}
        plans[name] = InstancePlan(name, vi.interface, addresses, notify={
            "": vi.notify, "MASTER": vi.notify_master, "BACKUP": vi.notify_backup, "FAULT": vi.notify_fault,
            "STOP": vi.notify_stop})
        tracked = [Tracked("interface", vi.interface)]
        tracked += [Tracked("interface", t.name, t.weight) for t in vi.track_interface]
        tracked += [Tracked("script", t.name, t.weight if t.weight is not None else
                            config.vrrp_scripts[t.name].weight) for t in vi.track_script]
        tracking[name] = tracked
    groups = {}
    for name, sg in config.vrrp_sync_groups.items():
        groups[name] = list(sg.group)
        for member in sg.group:
            plans[member].group = name
            plans[member].group_notify = {"": sg.notify, "MASTER": sg.notify_master, "BACKUP": sg.notify_backup,
                                          "FAULT": sg.notify_fault}
    scripts = {name: (vs.script, vs.interval, vs.timeout) for name, vs in config.vrrp_scripts.items()
               if any(t.name == name for vi in config.vrrp_instances.values() for t in vi.track_script)}
    states = {name: ScriptState(vs.rise, vs.fall) for name, vs in config.vrrp_scripts.items() if name in scripts}
    router = Router(instances, tracking, groups, states)
    sync = g.lvs_sync_daemon
    if sync is not None and sync.instance is not None and sync.instance not in instances:
        diags.error(f"lvs_sync_daemon vrrp instance {sync.instance} not found", None)
        sync = None
    ranges = [(vs.addr, vs.addr) for vs in config.virtual_servers if vs.addr]
    ranges += [(e.first, e.last) for group in config.virtual_server_groups.values() for e in group.entries
               if e.first and e.last]
    service_ranges = tuple((int(ipaddress.ip_address(lo)), int(ipaddress.ip_address(hi))) for lo, hi in ranges)
    return Plan(router, plans, scripts, sync, g.vrrp_mcast_group4, service_ranges)
