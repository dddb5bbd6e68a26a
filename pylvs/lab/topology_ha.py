"""A master/backup pair of NAT directors sharing both segments, for connection sync and failover::

    client 203.0.113.10 --- br0 (cnet) --+-- vip0 [master] dip0 --+-- br0 (lan) --- rs1 192.0.2.11
                                         |  .2              .2    |             +-- rs2 192.0.2.12
                                         +-- vip0 [backup] dip0 --+              (default gw 192.0.2.1)
                                            .3              .3

    VIP 203.0.113.100 is claimed by whichever lvsd acts as the director; the backup runs with
    --backup-only, so it leaves the VIP alone while its backup sync daemon runs. The real servers'
    gateway 192.0.2.1 is a floating kernel address, held by the master until a failover moves it
    (keepalived's virtual_ipaddress would, with VRRP).

Sync messages go over the LAN (dip0). Addresses come from the documentation ranges and live only
inside the lab's namespaces.

`HaNatLab(ipv6=True)` adds IPv6 to every link (pylvs.lab.ipv6's ranges: client 2001:db8:10::10,
VIP6 2001:db8:10::100, directors ::2/::3 on both segments, real servers 2001:db8:2::11.. behind the
floating gateway 2001:db8:2::1) and an IPv6 NAT service beside the IPv4 one in `rules()`.
"""

from __future__ import annotations

import os
import subprocess
import sys

from pylvs.lab import ipv6 as lab6
from pylvs.lab import servers
from pylvs.lab.netns import LabError, Netns, wait_for

CLIENT = "203.0.113.10"
VIP = "203.0.113.100"
GATEWAY = "192.0.2.1"  # the real servers' route out, floating between the directors
ADDRS = {"master": ("203.0.113.2", "192.0.2.2"), "backup": ("203.0.113.3", "192.0.2.3")}
RPORT = 8080
VIP6 = lab6.NAT_VIP6
GATEWAY6 = lab6.DIP6  # 2001:db8:2::1, floating as GATEWAY
ADDRS6 = {"master": ("2001:db8:10::2", "2001:db8:2::2"), "backup": ("2001:db8:10::3", "2001:db8:2::3")}


class DirectorNode:
    """One director namespace and the lvsd in it."""

    interfaces: tuple[str, ...] = ("vip0", "dip0")

    def __init__(self, net: Netns, role: str) -> None:
        self.net, self.role = net, role
        self.control = os.path.join(net.tmp, f"{role}-lvsd.sock")
        self.log = f"{role}-lvsd.log"
        self.proc: subprocess.Popen | None = None

    def start(self, *extra: str) -> None:
        interfaces = [arg for name in self.interfaces for arg in ("-i", name)]
        self.proc = self.net.popen(self.role, sys.executable, "-m", "pylvs.cli.lvsd", *interfaces,
                                   "--control", self.control, *extra, log=self.log)
        try:
            wait_for(lambda: os.path.exists(self.control) or self.proc.poll() is not None, what=f"{self.role} lvsd")
        except LabError:
            raise LabError(f"{self.role} lvsd did not start: {self.lvsd_log()}") from None
        if self.proc.poll() is not None:
            raise LabError(f"{self.role} lvsd exited: {self.lvsd_log()}")

    def stop(self) -> None:
        if self.proc is not None:
            self.net.kill(self.proc)
            self.proc = None

    def lvsd_log(self) -> str:
        try:
            with open(os.path.join(self.net.tmp, self.log)) as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def lvsadm(self, *args: str, stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
        cmd = ["ip", "netns", "exec", self.net.name(self.role), sys.executable, "-m", "pylvs.cli.lvsadm",
               "--control", self.control, *args]
        result = subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=30)
        if check and result.returncode:
            raise LabError(f"{self.role}: lvsadm {' '.join(args)}: exit {result.returncode}: {result.stderr.strip()}")
        return result


class HaNatLab:
    def __init__(self, n_rs: int = 2, big_mb: int = 8, prefix: str | None = None, ipv6: bool = False) -> None:
        self.net = Netns(prefix)
        self.ipv6 = ipv6
        self.rs_names = [f"rs{i}" for i in range(1, n_rs + 1)]
        self.rips = [f"192.0.2.{10 + i}" for i in range(1, n_rs + 1)]
        self.big_mb = big_mb
        self.master = DirectorNode(self.net, "master")
        self.backup = DirectorNode(self.net, "backup")

    def up(self) -> HaNatLab:
        try:
            self._build()
        except BaseException:
            self.down()
            raise
        return self

    def _build(self) -> None:
        net = self.net
        for role in ("client", "cnet", "master", "backup", "lan", *self.rs_names):
            net.add(role)
        net.bridge("cnet", "br0")
        net.bridge("lan", "br0")
        net.veth("client", "eth0", "cnet", "pc")
        net.addr("client", "eth0", f"{CLIENT}/24")
        for role, (outside, inside) in ADDRS.items():
            net.veth(role, "vip0", "cnet", f"p{role[0]}")
            net.veth(role, "dip0", "lan", f"p{role[0]}")
            net.ip("cnet", "link", "set", f"p{role[0]}", "master", "br0")
            net.ip("lan", "link", "set", f"p{role[0]}", "master", "br0")
            net.addr(role, "vip0", f"{outside}/24")
            net.addr(role, "dip0", f"{inside}/24")
            net.sysctl(role, "net.ipv4.ip_forward", 0)
        net.ip("cnet", "link", "set", "pc", "master", "br0")
        net.addr("master", "dip0", f"{GATEWAY}/24")  # secondary: the sync source stays the primary .2
        servers.make_big_file(net, self.big_mb << 20)
        if self.ipv6:
            self._add_ipv6()
        for i, (name, addr) in enumerate(zip(self.rs_names, self.rips, strict=True), start=1):
            net.veth(name, "eth0", "lan", f"r{name}")
            net.ip("lan", "link", "set", f"r{name}", "master", "br0")
            net.addr(name, "eth0", f"{addr}/24")
            net.ip(name, "route", "add", "default", "via", GATEWAY)
            if self.ipv6:
                lab6.addr6(net, name, "eth0", lab6.rip6(i))
                net.ip(name, "-6", "route", "add", "default", "via", GATEWAY6)
            servers.start_nginx(net, name, addr, RPORT, name, addr6=lab6.rip6(i) if self.ipv6 else None)
        for name, addr in zip(self.rs_names, self.rips, strict=True):
            wait_for(lambda n=name, a=addr: bool(self.net.exec(n, "ss", "-Htln", f"src {a}:{RPORT}",
                                                                check=False).stdout.strip()), what=f"nginx on {name}")

    def _add_ipv6(self) -> None:
        net = self.net
        # IPv6 multicast (the sync group) is flooded: no MLD snooping on the LAN's bridge
        net.ip("lan", "link", "set", "br0", "type", "bridge", "mcast_snooping", "0")
        lab6.addr6(net, "client", "eth0", lab6.CLIENT6)
        for role, (outside, inside) in ADDRS6.items():
            lab6.addr6(net, role, "vip0", outside)
            lab6.addr6(net, role, "dip0", inside)
        lab6.addr6(net, "master", "dip0", GATEWAY6)

    def rules(self, vport: int = 80) -> str:
        """The same NAT service for both directors, as an ipvsadm-save file."""
        lines = [f"-A -t {VIP}:{vport} -s rr"]
        lines += [f"-a -t {VIP}:{vport} -r {rip}:{RPORT} -m -w 1" for rip in self.rips]
        if self.ipv6:
            lines.append(f"-A -t [{VIP6}]:{vport} -s rr")
            lines += [f"-a -t [{VIP6}]:{vport} -r [{lab6.rip6(i)}]:{RPORT} -m -w 1"
                      for i in range(1, len(self.rips) + 1)]
        return "\n".join(lines) + "\n"

    def curl(self, *args: str, timeout: float = 10) -> subprocess.CompletedProcess:
        return self.net.exec("client", "curl", "-sS", "--max-time", str(timeout), *args, check=False,
                             timeout=timeout + 5)

    def fail_over(self) -> None:
        """The master dies (its links go down); the backup takes the gateway address and becomes the
        director, as keepalived would on a VRRP transition."""
        for ifname in ("vip0", "dip0"):
            self.net.ip("master", "link", "set", ifname, "down")
        self.master.stop()
        self.net.addr("backup", "dip0", f"{GATEWAY}/24")
        self.net.exec("backup", sys.executable, "-m", "pylvs.lab.garp", "dip0", GATEWAY)
        self.backup.lvsadm("--stop-daemon", "backup")  # with --backup-only: claim the VIP, announce it
        self.backup.lvsadm("--start-daemon", "master", "--mcast-interface", "dip0")

    def down(self) -> None:
        self.master.proc = self.backup.proc = None
        self.net.teardown()

    def __enter__(self) -> HaNatLab:
        return self.up()

    def __exit__(self, *exc: object) -> None:
        self.down()
