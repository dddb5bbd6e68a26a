"""Two NAT directors on the client LAN, paired by VRRP from keepalived.conf (issue 16)::

    client 203.0.113.10 --- br0 (cnet) --+-- vip0 [d1] dip0 --+-- br0 (lan) --- rs1..rsN 192.0.2.11..
                                         |  .2           .2   |               (default gw 192.0.2.1)
                                         +-- vip0 [d2] dip0 --+
                                            .3           .3

(pylvs.lab.topology_ha's lab, namespaces `master` = d1 and `backup` = d2, without a fixed gateway.)

Each director runs `lvsd --keepalived` with two vrrp_instances in a vrrp_sync_group, as LVS-NAT
sites do (keepalived.md §5.2/5.3): VI_1 holds the VIP 203.0.113.100 on vip0, VI_2 the real
servers' gateway 192.0.2.1 on dip0; `lvs_sync_daemon dip0 VI_1` makes the master's connections
follow to the backup. `d2` may instead run Debian's keepalived (VRRP only) as the peer.
Addresses come from the documentation ranges and live only inside the lab's namespaces.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess

from pylvs.lab.netns import LabError, Netns
from pylvs.lab.topology_ha import ADDRS, CLIENT, GATEWAY, RPORT, VIP, DirectorNode, HaNatLab

__all__ = ["ADDRS", "CLIENT", "GATEWAY", "VIP", "KeepalivedNode", "VrrpLab", "keepalived_conf"]


def keepalived_conf(priority: int, *, advert_int: float = 1, version: int = 2, state: str = "BACKUP",
                    rips: list[str] | tuple[str, ...] = (), gateway: bool = True, sync: bool = True,
                    auth: str | None = None, nopreempt: bool = False, notify: str | None = None) -> str:
    """One director's keepalived.conf: the VRRP pair and, with `rips`, the NAT virtual server."""
    glob = [f"    vrrp_version {version}"] + (["    lvs_sync_daemon dip0 VI_1"] if sync else [])
    lines = ["global_defs {", *glob, "}"]
    members = ["VI_1", "VI_2"] if gateway else ["VI_1"]
    if gateway:
        lines += ["vrrp_sync_group VG1 {", "    group {", *[f"        {m}" for m in members], "    }", "}"]
    for name, vrid, ifname, addr in (("VI_1", 51, "vip0", f"{VIP}/24"), ("VI_2", 52, "dip0", f"{GATEWAY}/24")):
        if name not in members:
            continue
        lines += [f"vrrp_instance {name} {{", f"    state {state}", f"    interface {ifname}",
                  f"    virtual_router_id {vrid}", f"    priority {priority}", f"    advert_int {advert_int}"]
        lines += ["    nopreempt"] if nopreempt else []
        lines += [f'    notify "{notify}"'] if notify else []
        if auth:
            lines += ["    authentication {", "        auth_type PASS", f"        auth_pass {auth}", "    }"]
        lines += ["    virtual_ipaddress {", f"        {addr}", "    }", "}"]
    if rips:
        lines += [f"virtual_server {VIP} 80 {{", "    lb_algo rr", "    lb_kind NAT", "    protocol TCP"]
        for rip in rips:
            lines += [f"    real_server {rip} {RPORT} {{", "        weight 1", "    }"]
        lines += ["}"]
    return "\n".join(lines) + "\n"


class KeepalivedNode:
    """Debian's keepalived in a director's namespace, VRRP only, in the foreground."""

    def __init__(self, net: Netns, role: str) -> None:
        self.net, self.role = net, role
        self.proc: subprocess.Popen | None = None
        self.log = f"{role}-keepalived.log"

    def start(self, conf: str) -> None:
        binary = shutil.which("keepalived") or "/usr/sbin/keepalived"
        if not os.path.exists(binary):
            raise LabError("keepalived is not installed (apt-get install keepalived)")
        path = os.path.join(self.net.tmp, f"{self.role}-keepalived.conf")
        with open(path, "w") as f:
            f.write(conf)
        pids = {opt: os.path.join(self.net.tmp, f"{self.role}-{opt}.pid") for opt in ("pid", "vrrp_pid",
                                                                                     "checkers_pid")}
        self.proc = self.net.popen(self.role, binary, "--dont-fork", "--log-console", "--log-detail",
                                   "--vrrp", "-f", path, *[f"--{opt}={p}" for opt, p in pids.items()],
                                   log=self.log)

    def stop(self) -> None:
        if self.proc is not None:
            self.net.kill(self.proc)
            self.proc = None

    def output(self) -> str:
        try:
            with open(os.path.join(self.net.tmp, self.log)) as f:
                return f.read()
        except FileNotFoundError:
            return ""


class VrrpLab(HaNatLab):
    """HaNatLab's two directors and real servers, with the gateway left to VRRP: `d1` is the
    namespace `master` and `d2` the namespace `backup` of that lab, whichever VRRP elects."""

    def __init__(self, n_rs: int = 3, big_mb: int = 8, prefix: str | None = None) -> None:
        super().__init__(n_rs, big_mb, prefix)
        self.d1, self.d2 = self.master, self.backup
        self.kad = KeepalivedNode(self.net, self.d2.role)

    def _build(self) -> None:
        super()._build()
        self.net.ip(self.master.role, "addr", "del", f"{GATEWAY}/24", "dev", "dip0")  # VRRP's to place

    def start_lvsd(self, node: DirectorNode, conf: str, *extra: str) -> None:
        path = os.path.join(self.net.tmp, f"{node.role}-keepalived.conf")
        with open(path, "w") as f:
            f.write(conf)
        node.start("--keepalived", path, *extra)

    def vrrp_state(self, node: DirectorNode) -> dict[str, str]:
        """Instance -> state, from `lvsadm --vrrp --json`."""
        result = node.lvsadm("--vrrp", "--json", check=False)
        if result.returncode:
            raise LabError(f"{node.role}: lvsadm --vrrp: {result.stderr.strip()}")
        return {i["name"]: i["state"] for i in json.loads(result.stdout)["instances"]}

    def has_addr(self, node: DirectorNode, ifname: str, addr: str) -> bool:
        out = self.net.exec(node.role, "ip", "-4", "-o", "addr", "show", "dev", ifname, check=False).stdout
        return f" {addr}/" in out

    def mac(self, node: DirectorNode, ifname: str) -> str:
        return self.net.exec(node.role, "cat", f"/sys/class/net/{ifname}/address").stdout.strip()

    def down(self) -> None:
        self.kad.proc = None
        super().down()
