"""The benchmark's lab: NatLab plus what the benchmark needs around it (iperf3, VIP on the kernel, routes).

NatLab is composed, never changed: the director namespace is rebuilt from scratch for every mode, so
no mode inherits another's conntrack entries, nftables tables, neighbour caches or processes.
"""

from __future__ import annotations

import os
import subprocess
import sys

from pylvs.lab.netns import LabError, wait_for
from pylvs.lab.topology import CLIENT, DIRECTOR_OUTSIDE, VIP, NatLab

IPERF_PORT = 5201
PORT_RANGE = "1024 65535"  # many short connections per run: keep ephemeral ports from wrapping early


class BenchLab(NatLab):
    """A NatLab with an iperf3 server on rs1 and helpers to turn the director into each mode."""

    def __init__(self, forwarding: bool) -> None:
        super().__init__(n_rs=3, director_forwarding=forwarding)

    def build(self) -> BenchLab:
        self.up(http=True, udp=False)
        try:
            for role in ("client", "director"):
                self.net.sysctl(role, "net.ipv4.ip_local_port_range", PORT_RANGE)
            self.start_iperf_server(self.rs_names[0], self.rips[0])
        except BaseException:
            self.down()
            raise
        return self

    # -- servers and addresses ----------------------------------------------------------------

    def listening(self, role: str, addr: str, port: int) -> bool:
        out = self.net.exec(role, "ss", "-Htln", f"src {addr}:{port}", check=False).stdout
        return bool(out.strip())

    def start_iperf_server(self, role: str, addr: str) -> None:
        self.net.popen(role, "iperf3", "-s", "-B", addr, "-p", str(IPERF_PORT), log=f"{role}-iperf3.log")
        wait_for(lambda: self.listening(role, addr, IPERF_PORT), what=f"iperf3 on {role}")

    def add_vip_to_kernel(self) -> None:
        """The director kernel owns the VIP (answers ARP, accepts the traffic locally or for DNAT)."""
        self.net.addr("director", "vip0", f"{VIP}/32")

    def route_client_to_lan(self) -> None:
        self.net.ip("client", "route", "add", "192.0.2.0/24", "via", DIRECTOR_OUTSIDE)

    def sysctl_value(self, role: str, key: str) -> str:
        return self.net.exec(role, "sysctl", "-n", key).stdout.strip()

    def kernel_has_vip(self) -> bool:
        out = self.net.ip("director", "-4", "-o", "addr", "show").stdout
        return f" {VIP}/" in out

    # -- lvsd --------------------------------------------------------------------------------

    def start_lvsd_profiled(self, outfile: str) -> subprocess.Popen:
        """lvsd under cProfile; stopping it with SIGTERM ends its loop normally and cProfile writes `outfile`."""
        if os.path.exists(self.control):
            os.unlink(self.control)
        proc = self.net.popen("director", sys.executable, "-m", "cProfile", "-o", outfile, "-m", "pylvs.cli.lvsd",
                              "-i", "vip0", "-i", "dip0", "--control", self.control, log="lvsd.log")
        self.lvsd = proc
        wait_for(lambda: os.path.exists(self.control) or proc.poll() is not None, what="lvsd under cProfile")
        if proc.poll() is not None:
            raise LabError(f"lvsd (cProfile) exited: {self.lvsd_log()}")
        return proc

    def add_iperf_service(self) -> None:
        self.lvsadm("-A", "-t", f"{VIP}:{IPERF_PORT}", "-s", "rr")
        self.lvsadm("-a", "-t", f"{VIP}:{IPERF_PORT}", "-r", f"{self.rips[0]}:{IPERF_PORT}", "-m")

    def lvsd_stats(self) -> dict[str, tuple[int, ...]]:
        """Per virtual service: (conns, inpkts, outpkts, inbytes, outbytes) from `lvsadm -L -n --stats --exact`."""
        out = self.lvsadm("-L", "-n", "--stats", "--exact").stdout
        stats: dict[str, tuple[int, ...]] = {}
        for line in out.splitlines():
            fields = line.split()
            if len(fields) == 7 and fields[0] in ("TCP", "UDP"):
                stats[fields[1]] = tuple(int(v) for v in fields[2:])
        return stats


def http_check(lab: NatLab, url: str) -> str:
    """One request before the load, so a broken mode fails fast with a clear message."""
    result = lab.curl(url, timeout=5)
    if result.returncode:
        raise LabError(f"{url} from the client failed: {result.stderr.strip()}")
    return result.stdout.strip()


__all__ = ["BenchLab", "CLIENT", "IPERF_PORT", "VIP", "http_check"]
