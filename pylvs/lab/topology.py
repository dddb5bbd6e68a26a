"""Lab topologies faithful to the LVS pictures, built in network namespaces.

NAT (the seed's picture)::

    client 203.0.113.10 --- vip0 [director] dip0 --- br0 (lan) --- rs1 192.0.2.11
                                 203.0.113.1      192.0.2.1     +-- rs2 192.0.2.12
                                 VIP 203.0.113.100 (engine)     +-- rs3 192.0.2.13
                                                                  (default gw = DIP)

With `client_mtu` (e.g. 9000) the client's link (client eth0, director vip0) carries jumbo frames
while the real servers' LAN keeps 1500: what the director must fragment or refuse.

Addresses come from the documentation ranges and live only inside the lab's namespaces.
"""

from __future__ import annotations

import subprocess
import time

from pylvs.lab import ipv6, servers
from pylvs.lab.base import Lab
from pylvs.lab.netns import run, wait_for

CLIENT = "203.0.113.10"
DIRECTOR_OUTSIDE = "203.0.113.1"
VIP = "203.0.113.100"
DIP = "192.0.2.1"


def rip(i: int) -> str:
    return f"192.0.2.{10 + i}"


class NatLab(Lab):
    """Client, director (two arms), a LAN switch and N real servers with nginx (and a UDP responder)."""

    director_interfaces = ("vip0", "dip0")

    def __init__(self, n_rs: int = 3, rport: int = 8080, udp_port: int = 5353, prefix: str | None = None,
                 director_forwarding: bool = False, client_mtu: int | None = None, ipv6: bool = False) -> None:
        self.n_rs = n_rs
        self.ipv6 = ipv6  # IPv6 on every link too (pylvs.lab.ipv6)
        self.client_mtu = client_mtu
        self.rport = rport
        self.udp_port = udp_port
        self.director_forwarding = director_forwarding
        super().__init__(prefix)
        self.rs_names = [f"rs{i}" for i in range(1, n_rs + 1)]
        self.nginx: dict[str, subprocess.Popen] = {}
        self.rips = [rip(i) for i in range(1, n_rs + 1)]

    # -- building ---------------------------------------------------------------------------

    def up(self, http: bool = True, udp: bool = True) -> NatLab:
        try:
            self._build(http, udp)
        except BaseException:
            self.down()
            raise
        return self

    def _build(self, http: bool, udp: bool) -> None:
        net = self.net
        for role in ("client", "director", "lan", *self.rs_names):
            net.add(role)
        net.bridge("lan", "br0")
        net.veth("client", "eth0", "director", "vip0")
        if self.client_mtu:
            net.mtu("client", "eth0", self.client_mtu)
            net.mtu("director", "vip0", self.client_mtu)
        net.veth("director", "dip0", "lan", "p0")
        net.ip("lan", "link", "set", "p0", "master", "br0")
        net.addr("client", "eth0", f"{CLIENT}/24")
        net.addr("director", "vip0", f"{DIRECTOR_OUTSIDE}/24")
        net.addr("director", "dip0", f"{DIP}/24")
        net.sysctl("director", "net.ipv4.ip_forward", 1 if self.director_forwarding else 0)
        for i, (name, addr) in enumerate(zip(self.rs_names, self.rips, strict=True), start=1):
            net.veth(name, "eth0", "lan", f"p{i}")
            net.ip("lan", "link", "set", f"p{i}", "master", "br0")
            net.addr(name, "eth0", f"{addr}/24")
            net.ip(name, "route", "add", "default", "via", DIP)
        if self.ipv6:
            ipv6.nat(net, self.rs_names)
        if http:
            servers.make_big_file(net, 64 << 20)
            for name in self.rs_names:
                self.start_http(name, wait=False)
        if udp:
            for name, addr in zip(self.rs_names, self.rips, strict=True):
                servers.start_udp(net, name, addr, self.udp_port, name)
        for name, addr in zip(self.rs_names, self.rips, strict=True):
            if http:
                wait_for(lambda n=name, a=addr: self._listening(n, a, self.rport), what=f"nginx on {name}")

    def start_http(self, name: str, wait: bool = True) -> None:
        i = self.rs_names.index(name)
        addr = self.rips[i]
        addr6 = ipv6.rip6(i + 1) if self.ipv6 else None
        self.nginx[name] = servers.start_nginx(self.net, name, addr, self.rport, name, addr6=addr6)
        if wait:
            wait_for(lambda: self._listening(name, addr, self.rport), what=f"nginx on {name}")

    def stop_http(self, name: str) -> None:
        """Stop a real server's nginx (a failure for health checks to notice)."""
        self.net.kill(self.nginx.pop(name))

    def _listening(self, role: str, addr: str, port: int) -> bool:
        out = self.net.exec(role, "ss", "-Htln", f"src {addr}:{port}", check=False).stdout
        return bool(out.strip())

    # -- the director ---------------------------------------------------------------------

    def nat_service(self, vport: int = 80, scheduler: str = "rr", udp: bool = False) -> None:
        """One NAT virtual service over every real server, with ipvsadm syntax."""
        flag, port = ("-u", self.udp_port) if udp else ("-t", self.rport)
        self.lvsadm("-A", flag, f"{VIP}:{vport}", "-s", scheduler)
        for addr in self.rips:
            self.lvsadm("-a", flag, f"{VIP}:{vport}", "-r", f"{addr}:{port}", "-m", "-w", "1")

def settle(seconds: float = 0.2) -> None:
    time.sleep(seconds)


__all__ = ["NatLab", "CLIENT", "VIP", "DIP", "DIRECTOR_OUTSIDE", "rip", "run", "settle"]
