"""DR and TUN labs: the LVS pictures for direct routing and tunneling, in network namespaces.

DR (one-armed director, everyone on one segment, replies go through the router, not the director)::

    client 203.0.113.10 --- eth0 [router] lan0 --- br0 (lan) --- dip0 [director] 192.0.2.1
                          203.0.113.1   192.0.2.254          +-- rs1 192.0.2.11 (VIP on lo)
                                                             +-- rs2 192.0.2.12
                                                             +-- rs3 192.0.2.13
    VIP 192.0.2.100: answered for by lvsd (ARP), held on lo by every real server (lvs-rs).
    Real servers route by default via the router; packets *from* their RIP (NAT replies, for a
    service mixing -g and -m) go via the director, by a source rule.

    With `client_mtu` (e.g. 9000) the director gets a second arm, up0 198.18.0.2, on a link of
    that MTU from the router (dr0 198.18.0.1), which routes the VIP there; client and router links
    carry the same MTU, the LAN keeps 1500: the path of a jumbo frame the director must cut or refuse.

TUN (the real servers in another network, reached through the router)::

    client --- [router] lan0 192.0.2.254 --- br0 (lan) --- dip0 [director] 192.0.2.1, VIP 192.0.2.100
                        rs0 198.51.100.1 --- br0 (rsnet) --- rs1 198.51.100.11, rs2 .12, rs3 .13
    Each real server decapsulates with lvs-rs (here: in userspace, as this kernel has no tunnel
    modules) and answers the client from the VIP straight through the router.

Addresses come from the documentation ranges and live only inside the lab's namespaces.
"""

from __future__ import annotations

import os
import subprocess
import sys

from pylvs.lab import ipv6, servers
from pylvs.lab.base import Lab
from pylvs.lab.netns import wait_for

CLIENT = "203.0.113.10"
ROUTER_OUTSIDE = "203.0.113.1"
ROUTER_LAN = "192.0.2.254"
DIP = "192.0.2.1"
VIP = "192.0.2.100"
ROUTER_RSNET = "198.51.100.1"
GUE_PORT = 6080
NAT_TABLE = "100"
ROUTER_UPLINK = "198.18.0.1"
DIRECTOR_UPLINK = "198.18.0.2"


class _Lab(Lab):
    """What both labs share: a one-armed director, nginx on every real server, lvs-rs."""

    method = ""
    director_interfaces = ("dip0",)
    ipv6 = False

    def __init__(self, rips: list[str], prefix: str | None = None, port: int = 80) -> None:
        super().__init__(prefix)
        self.port = port
        self.rips = rips
        self.rs_names = [f"rs{i}" for i in range(1, len(rips) + 1)]

    def up(self) -> _Lab:
        try:
            self._build()
            for name in self.rs_names:
                servers.start_nginx(self.net, name, "0.0.0.0", self.port, name, addr6="::" if self.ipv6 else None)
            for name in self.rs_names:
                wait_for(lambda n=name: self._listening(n), what=f"nginx on {name}")
        except BaseException:
            self.down()
            raise
        return self

    def _build(self) -> None:
        raise NotImplementedError

    def _client_and_router(self) -> None:
        net = self.net
        for role in ("client", "router", "lan", "director", *self.rs_names):
            net.add(role)
        net.bridge("lan", "br0")
        net.veth("client", "eth0", "router", "eth0")
        net.veth("router", "lan0", "lan", "p0")
        net.veth("director", "dip0", "lan", "pd")
        for port in ("p0", "pd"):
            net.ip("lan", "link", "set", port, "master", "br0")
        net.addr("client", "eth0", f"{CLIENT}/24")
        net.ip("client", "route", "add", "default", "via", ROUTER_OUTSIDE)
        net.addr("router", "eth0", f"{ROUTER_OUTSIDE}/24")
        net.addr("router", "lan0", f"{ROUTER_LAN}/24")
        net.sysctl("router", "net.ipv4.ip_forward", 1)
        # Replies come from the VIP on another interface than the one the VIP is routed through.
        for conf in ("all", "default", "eth0", "lan0"):
            net.sysctl("router", f"net.ipv4.conf.{conf}.rp_filter", 0)
        net.addr("director", "dip0", f"{DIP}/24")
        net.ip("director", "route", "add", "default", "via", ROUTER_LAN)
        net.sysctl("director", "net.ipv4.ip_forward", 0)

    def _listening(self, role: str) -> bool:
        out = self.net.exec(role, "ss", "-Htln", f"sport = :{self.port}", check=False).stdout
        return bool(out.strip())

    def lvs_rs(self, role: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        state_dir = os.path.join(self.net.tmp, f"{role}-lvs-rs")
        return self.net.exec(role, sys.executable, "-m", "pylvs.cli.lvs_rs", *args, "--state-dir", state_dir,
                             check=check, timeout=30)

    def mac(self, role: str, ifname: str) -> str:
        return self.net.exec(role, "cat", f"/sys/class/net/{ifname}/address").stdout.strip()

    def down(self) -> None:
        for name in self.rs_names:
            if self.net.name(name) in self.net.namespaces:
                try:
                    self.lvs_rs(name, "down", check=False)
                except (subprocess.TimeoutExpired, OSError):
                    pass  # teardown kills whatever is left in the namespace anyway
        super().down()


class DrLab(_Lab):
    """Client, router, a LAN with a one-armed director and N real servers that hold the VIP on lo."""

    method = "dr"

    def __init__(self, n_rs: int = 3, prefix: str | None = None, client_mtu: int | None = None,
                 ipv6: bool = False) -> None:
        super().__init__([f"192.0.2.{10 + i}" for i in range(1, n_rs + 1)], prefix)
        self.client_mtu = client_mtu
        self.ipv6 = ipv6  # IPv6 on every link too (pylvs.lab.ipv6); nginx listens on any address
        if client_mtu:
            self.director_interfaces = ("dip0", "up0")

    def _build(self) -> None:
        net = self.net
        self._client_and_router()
        if self.client_mtu:
            self._uplink(self.client_mtu)
        for i, (name, addr) in enumerate(zip(self.rs_names, self.rips, strict=True), start=1):
            net.veth(name, "eth0", "lan", f"p{i}")
            net.ip("lan", "link", "set", f"p{i}", "master", "br0")
            net.addr(name, "eth0", f"{addr}/24")
            net.ip(name, "route", "add", "default", "via", ROUTER_LAN)
            # NAT replies (from the RIP) must cross the director; DR replies (from the VIP) must not.
            net.ip(name, "route", "add", "192.0.2.0/24", "dev", "eth0", "table", NAT_TABLE)
            net.ip(name, "route", "add", "default", "via", DIP, "table", NAT_TABLE)
            net.ip(name, "rule", "add", "from", addr, "lookup", NAT_TABLE)
            self.lvs_rs(name, "up", "--vip", VIP, "--method", "dr")
        if self.ipv6:
            ipv6.dr(net, self.rs_names)

    def _uplink(self, mtu: int) -> None:
        """The director's second arm towards the router, which sends VIP traffic over it."""
        net = self.net
        net.veth("router", "dr0", "director", "up0")
        net.addr("router", "dr0", f"{ROUTER_UPLINK}/30")
        net.addr("director", "up0", f"{DIRECTOR_UPLINK}/30")
        for role, ifname in (("client", "eth0"), ("router", "eth0"), ("router", "dr0"), ("director", "up0")):
            net.mtu(role, ifname, mtu)
        net.sysctl("router", "net.ipv4.conf.dr0.rp_filter", 0)
        net.ip("router", "route", "add", f"{VIP}/32", "via", DIRECTOR_UPLINK)

    def service(self, vport: int = 80, scheduler: str = "rr", methods: list[str] | None = None) -> None:
        """One TCP service over every real server; methods per server as lvsadm flags (-g default)."""
        self.lvsadm("-A", "-t", f"{VIP}:{vport}", "-s", scheduler)
        for addr, flag in zip(self.rips, methods or ["-g"] * len(self.rips), strict=True):
            self.lvsadm("-a", "-t", f"{VIP}:{vport}", "-r", f"{addr}:{self.port}", flag, "-w", "1")


class TunLab(_Lab):
    """Client, router, the director's LAN, and real servers in a network of their own behind the router."""

    method = "tun"

    def __init__(self, tun_types: tuple[str, ...] = ("ipip", "gue", "gre"), prefix: str | None = None) -> None:
        super().__init__([f"198.51.100.{10 + i}" for i in range(1, len(tun_types) + 1)], prefix)
        self.tun_types = tun_types

    def _build(self) -> None:
        net = self.net
        self._client_and_router()
        net.add("rsnet")
        net.bridge("rsnet", "br0")
        net.veth("router", "rs0", "rsnet", "p0")
        net.ip("rsnet", "link", "set", "p0", "master", "br0")
        net.addr("router", "rs0", f"{ROUTER_RSNET}/24")
        net.sysctl("router", "net.ipv4.conf.rs0.rp_filter", 0)
        for i, (name, addr, kind) in enumerate(zip(self.rs_names, self.rips, self.tun_types, strict=True), start=1):
            net.veth(name, "eth0", "rsnet", f"p{i}")
            net.ip("rsnet", "link", "set", f"p{i}", "master", "br0")
            net.addr(name, "eth0", f"{addr}/24")
            net.ip(name, "route", "add", "default", "via", ROUTER_RSNET)
            self.lvs_rs(name, "up", "--vip", VIP, "--method", "tun", *self.tun_args(kind))

    @staticmethod
    def tun_args(kind: str) -> list[str]:
        return ["--tun-type", kind, *(["--tun-port", str(GUE_PORT)] if kind == "gue" else [])]

    def service(self, vport: int = 80, scheduler: str = "rr", csum: bool = False) -> None:
        """One TCP service over every real server, each with its own tunnel type."""
        self.lvsadm("-A", "-t", f"{VIP}:{vport}", "-s", scheduler)
        for addr, kind in zip(self.rips, self.tun_types, strict=True):
            extra = ["--tun-csum"] if csum and kind != "ipip" else []
            self.lvsadm("-a", "-t", f"{VIP}:{vport}", "-r", addr, "-i", *self.tun_args(kind), *extra, "-w", "1")


__all__ = ["DrLab", "TunLab", "CLIENT", "VIP", "DIP", "ROUTER_LAN", "ROUTER_RSNET", "GUE_PORT", "ROUTER_UPLINK",
           "DIRECTOR_UPLINK"]
