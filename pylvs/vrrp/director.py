"""VRRP inside lvsd: the plan from keepalived.conf, the speaker's thread, and the roles applied in
the packet loop (`queue_call` hands each transition over to it)."""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable
from dataclasses import astuple
from typing import Any

from pyroute2 import IPRoute

from pylvs.engine.engine import Engine
from pylvs.io.sync_daemons import SyncDaemons
from pylvs.keepalived import Config, ConfigError
from pylvs.keepalived.errors import where
from pylvs.vrrp import plan as vrrp_plan
from pylvs.vrrp.roles import DirectorRoles
from pylvs.vrrp.speaker import Speaker
from pylvs.vrrp.state import Transition

log = logging.getLogger("pylvs.vrrp")


def primary_ipv4(ifname: str) -> str:
    """The interface's primary IPv4 address (keepalived's source for adverts); 0.0.0.0 if none."""
    with IPRoute() as ipr:
        found = ipr.link_lookup(ifname=ifname)
        if not found:
            raise OSError(f"VRRP: no such interface: {ifname}")
        for msg in ipr.get_addr(index=found[0], family=socket.AF_INET):
            if not msg["flags"] & 0x01:  # IFA_F_SECONDARY
                return msg.get_attr("IFA_ADDRESS")
    return "0.0.0.0"


def check_interfaces(config: Config) -> None:
    """keepalived's VRRP process stops on an instance whose interface does not exist."""
    missing = False
    for name, vi in config.vrrp_instances.items():
        try:
            if vi.interface is not None:
                socket.if_nametoindex(vi.interface)
        except OSError:
            log.warning("%sWARNING - interface %s for vrrp_instance %s doesn't exist", where(*astuple(vi.at)),
                        vi.interface, name)
            missing = True
    if missing:
        raise ConfigError("Non-existent interface specified in configuration")


class VrrpDirector:
    def __init__(self, config: Config, engine: Engine, sync: SyncDaemons,
                 queue_call: Callable[[Callable[[], None]], None]) -> None:
        check_interfaces(config)
        self.plan = vrrp_plan.build(config, primary_ipv4)
        self.roles = DirectorRoles(engine, sync, self.plan)
        self.queue_call = queue_call
        self.speaker = Speaker(self.plan, self._transition, config.global_defs)
        self.roles.start()

    def _transition(self, name: str, t: Transition) -> None:
        self.queue_call(lambda: self.roles.transition(name, t))

    def start(self) -> None:
        self.speaker.start()

    def status(self) -> dict[str, Any]:
        return {"instances": self.speaker.status()}

    def close(self) -> None:
        self.speaker.stop()
        self.roles.close()
