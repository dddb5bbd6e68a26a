"""The benchmark's lab: NatLab plus what the benchmark needs around it (iperf3, VIP on the kernel, routes).

LabTools holds what every benchmark lab needs whatever its topology (also the DR and TUN labs in
routedlab.py). NatLab is composed, never changed: the lab, director namespace included, is rebuilt
from scratch for every mode, so no mode inherits another's conntrack entries, nftables tables,
neighbour caches or processes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable

from pylvs.lab import ipv6 as lab6
from pylvs.lab.netns import LabError, Netns, wait_for
from pylvs.lab.topology import CLIENT, DIRECTOR_OUTSIDE, VIP, NatLab

IPERF_PORT = 5201
PORT_RANGE = "1024 65535"  # many short connections per run: keep ephemeral ports from wrapping early


def url_host(addr: str) -> str:
    """An address as URLs, ss filters and ipvsadm write it: IPv6 in brackets."""
    return f"[{addr}]" if ":" in addr else addr


def hostport(addr: str, port: int) -> str:
    return f"{url_host(addr)}:{port}"


class LabTools:
    """What every benchmark lab adds to its topology: iperf3, sysctls, link and lvsd counters.

    Mixed into NatLab, DrLab and TunLab subclasses, which provide `net`, `lvsadm` and `lvsd`.
    """

    net: Netns
    lvsd: subprocess.Popen | None
    rs_names: list[str]
    # from the topology class (pylvs.lab.base.Lab):
    lvsadm: Callable[..., subprocess.CompletedProcess]
    curl: Callable[..., subprocess.CompletedProcess]
    start_lvsd: Callable[..., subprocess.Popen]
    stop_lvsd: Callable[..., int | None]
    lvsd_log: Callable[[], str]
    down: Callable[[], None]
    path_role = "director"  # the interface every mode's traffic crosses, whatever the mode
    path_iface = "vip0"

    def build(self) -> LabTools:
        """Bring the lab up with everything the benchmark needs, or leave nothing behind."""
        raise NotImplementedError

    def listening(self, role: str, addr: str, port: int) -> bool:
        out = self.net.exec(role, "ss", "-Htln", f"src {hostport(addr, port)}", check=False).stdout
        return bool(out.strip())

    def start_iperf_server(self, role: str, addr: str) -> None:
        self.net.popen(role, "iperf3", "-s", "-B", addr, "-p", str(IPERF_PORT), log=f"{role}-iperf3.log")
        wait_for(lambda: self.listening(role, addr, IPERF_PORT), what=f"iperf3 on {role}")

    def wide_port_range(self, *roles: str) -> None:
        for role in roles:
            self.net.sysctl(role, "net.ipv4.ip_local_port_range", PORT_RANGE)

    def sysctl_value(self, role: str, key: str) -> str:
        return self.net.exec(role, "sysctl", "-n", key).stdout.strip()

    def link_bytes(self, role: str, ifname: str, directions: tuple[str, ...] = ("rx", "tx")) -> int:
        """Bytes an interface received and/or sent (its stats64 counters)."""
        links = json.loads(self.net.ip(role, "-s", "-j", "link", "show", "dev", ifname).stdout)
        stats = links[0]["stats64"]
        return sum(int(stats[d]["bytes"]) for d in directions)

    def path_bytes(self) -> int:
        return self.link_bytes(self.path_role, self.path_iface)

    def lvsd_running(self) -> bool:
        return self.lvsd is not None and self.lvsd.poll() is None

    def lvsd_stats(self) -> dict[str, tuple[int, ...]]:
        """Per virtual service: (conns, inpkts, outpkts, inbytes, outbytes) from `lvsadm -L -n --stats --exact`."""
        out = self.lvsadm("-L", "-n", "--stats", "--exact").stdout
        stats: dict[str, tuple[int, ...]] = {}
        for line in out.splitlines():
            fields = line.split()
            if len(fields) == 7 and fields[0] in ("TCP", "UDP"):
                stats[fields[1]] = tuple(int(v) for v in fields[2:])
        return stats

    def lvsd_methods(self) -> dict[str, str]:
        """Real server -> forwarding method ("Masq", "Route", "Tunnel", "FullNat"), from `lvsadm -L -n`."""
        found: dict[str, str] = {}
        for line in self.lvsadm("-L", "-n").stdout.splitlines():
            fields = line.split()
            if len(fields) >= 3 and fields[0] == "->" and fields[1][0].isdigit():
                found[fields[1]] = fields[2]
        return found

    def start_lvsd_profiled(self, outfile: str) -> subprocess.Popen:
        """lvsd under cProfile; stopping it with SIGTERM ends its loop normally and cProfile writes `outfile`."""
        if os.path.exists(self.control):
            os.unlink(self.control)
        proc = self.net.popen("director", sys.executable, "-m", "cProfile", "-o", outfile, "-m", "pylvs.cli.lvsd",
                              "--datapath", "python", "-i", "vip0", "-i", "dip0", "--control", self.control,
                              log="lvsd.log")
        self.lvsd = proc
        wait_for(lambda: os.path.exists(self.control) or proc.poll() is not None, what="lvsd under cProfile")
        if proc.poll() is not None:
            raise LabError(f"lvsd (cProfile) exited: {self.lvsd_log()}")
        return proc


class BenchLab(LabTools, NatLab):
    """A NatLab with an iperf3 server on rs1 and helpers to turn the director into each mode.

    With `ipv6`, the lab has IPv6 on every link too (NatLab(ipv6=True)) and the modes balance IPv6:
    the VIP is 2001:db8:10::100, the real servers 2001:db8:2::11.., iperf3 listens on rs1's IPv6 address.
    """

    def __init__(self, forwarding: bool, ipv6: bool = False) -> None:
        super().__init__(n_rs=3, director_forwarding=forwarding, ipv6=ipv6)

    def build(self) -> BenchLab:
        self.up(http=True, udp=False)
        try:
            self.wide_port_range("client", "director")
            if self.ipv6:
                self.net.sysctl("director", self.forward_sysctl, 1 if self.director_forwarding else 0)
            self.start_iperf_server(self.rs_names[0], self.targets()[0])
        except BaseException:
            self.down()
            raise
        return self

    # -- servers and addresses ----------------------------------------------------------------

    @property
    def vip(self) -> str:
        """The address the load-balancing modes serve."""
        return lab6.NAT_VIP6 if self.ipv6 else VIP

    @property
    def forward_sysctl(self) -> str:
        return "net.ipv6.conf.all.forwarding" if self.ipv6 else "net.ipv4.ip_forward"

    def targets(self) -> list[str]:
        """The real servers' addresses the modes balance over (iperf3 on the first)."""
        return [lab6.rip6(i) for i in range(1, len(self.rips) + 1)] if self.ipv6 else list(self.rips)

    def add_vip_to_kernel(self) -> None:
        """The director kernel owns the VIP (answers ARP or NS, accepts the traffic locally or for DNAT)."""
        if self.ipv6:
            lab6.addr6(self.net, "director", "vip0", self.vip, 128)
        else:
            self.net.addr("director", "vip0", f"{VIP}/32")

    def route_client_to_lan(self) -> None:
        self.net.ip("client", "route", "add", "192.0.2.0/24", "via", DIRECTOR_OUTSIDE)

    def kernel_has_vip(self) -> bool:
        out = self.net.ip("director", "-6" if self.ipv6 else "-4", "-o", "addr", "show").stdout
        return f" {self.vip}/" in out

    # -- lvsd --------------------------------------------------------------------------------

    def add_http_service(self, scheduler: str = "rr", *flags: str) -> None:
        """VIP:80 with `scheduler` (and its -b flags) over every real server's nginx, NAT (masquerading)."""
        self.lvsadm("-A", "-t", hostport(self.vip, 80), "-s", scheduler, *(("-b", ",".join(flags)) if flags else ()))
        for addr in self.targets():
            self.lvsadm("-a", "-t", hostport(self.vip, 80), "-r", hostport(addr, self.rport), "-m", "-w", "1")

    def add_iperf_service(self) -> None:
        self.lvsadm("-A", "-t", hostport(self.vip, IPERF_PORT), "-s", "rr")
        self.lvsadm("-a", "-t", hostport(self.vip, IPERF_PORT), "-r", hostport(self.targets()[0], IPERF_PORT), "-m")


def http_check(lab: NatLab | LabTools, url: str) -> str:
    """One request before the load, so a broken mode fails fast with a clear message."""
    result = lab.curl(url, timeout=5)
    if result.returncode:
        raise LabError(f"{url} from the client failed: {result.stderr.strip()}")
    return result.stdout.strip()


__all__ = ["BenchLab", "CLIENT", "IPERF_PORT", "LabTools", "VIP", "hostport", "http_check", "url_host"]
