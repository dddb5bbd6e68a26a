"""What a VRRP transition means for lvsd; runs in the packet loop (queued by the speaker's thread).

* The VIPs of lvsd's virtual services are the engine's, never the kernel's: while no instance is
  master the engine stands by (`Engine.set_standby`: no ARP answers, no new connections, synced
  connections ready), and becoming master claims them (the director's gratuitous ARP follows).
* Any other virtual_ipaddress (a NAT real servers' gateway, say) is added to the kernel as
  keepalived adds it (`ip addr add ADDR/PREFIX dev IF`) on MASTER and removed on leaving it.
* `lvs_sync_daemon IF INSTANCE` (or the deprecated `lvs_sync_daemon_interface`): the backup sync
  daemon runs from the start; on MASTER the backup daemon stops and the master one starts, and the
  reverse on leaving MASTER (keepalived's ipvs_syncd_master/backup). Without an instance both run.
"""

from __future__ import annotations

import errno
import logging
import socket

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from pylvs.engine.engine import Engine
from pylvs.engine.services import ConfigError
from pylvs.io.sync_daemons import SyncDaemons
from pylvs.sync.config import BACKUP, MASTER, DaemonConfig
from pylvs.vrrp import state
from pylvs.vrrp.plan import Plan
from pylvs.vrrp.state import Transition

log = logging.getLogger("pylvs.vrrp")


class DirectorRoles:
    def __init__(self, engine: Engine, sync: SyncDaemons, plan: Plan) -> None:
        self.engine, self.sync, self.plan = engine, sync, plan
        self.states = {name: state.INIT for name in plan.instances}
        self.kernel_addrs: dict[str, set[tuple[str, int, str]]] = {name: set() for name in plan.instances}

    def start(self) -> None:
        """Before the table is loaded: stand by, so the VIPs are never announced by a backup."""
        self.engine.set_standby(True)
        sd = self.plan.sync_daemon
        if sd is None:
            return
        if sd.instance is None:
            for role in (MASTER, BACKUP):
                self._daemon(role, True)
        else:
            self._daemon(BACKUP, True)

    def transition(self, name: str, t: Transition) -> None:
        self.states[name] = t.new
        if t.new == state.MASTER:
            self._daemon_roles(name, MASTER)
            self._claim(name)
        elif t.old == state.MASTER:
            self._release(name)
            self._daemon_roles(name, BACKUP)
        self.engine.set_standby(state.MASTER not in self.states.values())

    def close(self) -> None:
        """At lvsd's exit: the kernel addresses it added go too (keepalived removes its VIPs)."""
        for name in self.plan.instances:
            self._release(name)

    # -- addresses ------------------------------------------------------------------------------

    def _claim(self, name: str) -> None:
        plan = self.plan.instances[name]
        services = self.engine.table.addresses
        with IPRoute() as ipr:
            for addr, options in plan.addresses.items():
                if socket.inet_aton(addr) in services or self.plan.is_service_address(addr):
                    continue  # the engine's (also before the checkers load the table): claimed by leaving standby
                dev = options.dev or plan.interface
                try:
                    ipr.addr("add", index=ipr.link_lookup(ifname=dev)[0], address=addr, prefixlen=options.prefix)
                except (NetlinkError, IndexError) as exc:
                    if getattr(exc, "code", 0) != errno.EEXIST:
                        log.error("(%s) cannot add %s/%d to %s: %s", name, addr, options.prefix, dev, exc)
                        continue
                self.kernel_addrs[name].add((addr, options.prefix, dev))
        log.info("(%s) setting VIPs.", name)

    def _release(self, name: str) -> None:
        added, self.kernel_addrs[name] = self.kernel_addrs[name], set()
        if not added:
            return
        with IPRoute() as ipr:
            for addr, prefix, dev in added:
                try:
                    ipr.addr("del", index=ipr.link_lookup(ifname=dev)[0], address=addr, prefixlen=prefix)
                except (NetlinkError, IndexError) as exc:
                    log.debug("(%s) removing %s from %s: %s", name, addr, dev, exc)
        log.info("(%s) removing VIPs.", name)

    # -- sync daemons ---------------------------------------------------------------------------

    def _daemon_roles(self, name: str, role: str) -> None:
        sd = self.plan.sync_daemon
        if sd is None or sd.instance != name:
            return
        other = BACKUP if role == MASTER else MASTER
        self._daemon(other, False)
        self._daemon(role, True)

    def _daemon(self, role: str, run: bool) -> None:
        sd = self.plan.sync_daemon
        running = (self.sync.master if role == MASTER else self.sync.backup) is not None
        try:
            if run and not running:
                syncid = sd.syncid if sd.syncid is not None else self._default_syncid()
                self.sync.start(DaemonConfig(role, sd.interface, syncid=syncid, sync_maxlen=sd.maxlen or 0,
                                             mcast_group=sd.group or DaemonConfig.mcast_group,
                                             mcast_port=sd.port or DaemonConfig.mcast_port,
                                             mcast_ttl=sd.ttl or DaemonConfig.mcast_ttl))
            elif not run and running:
                self.sync.stop(role)
        except ConfigError as exc:
            log.error("lvs_sync_daemon %s on %s: %s", role, sd.interface, exc)

    def _default_syncid(self) -> int:
        """keepalived: the instance's VRID when the daemon follows an instance, else 0."""
        sd = self.plan.sync_daemon
        if sd.instance is None:
            return 0
        return self.plan.router.instances[sd.instance].config.vrid
