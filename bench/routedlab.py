"""The benchmark's DR and TUN labs: DrLab and TunLab plus iperf3 and the counters the checks read.

In both labs the client reaches the VIP through a router. With lvsd, the router finds the VIP by
ARP, lvsd answers, and the requests cross the one-armed director; the real servers answer from the
VIP straight through the router. For the direct path of the same topology no lvsd runs at all: the
router gets a route for the VIP via the real servers themselves (ECMP with a layer-4 hash, so HTTP
spreads over all three nginx like the load-balanced runs; iperf3 pinned to rs1 by a policy rule),
and the real servers answer from the VIP exactly as they do behind the director.

In the TUN lab the direct path tunnels too, so that the real servers' userspace decapsulators do
the same work as behind lvsd and a tun/direct ratio measures the director alone: a tc program on
the router's egress towards the real servers (tunnel_router.bpf.c) encapsulates each VIP frame
with the tunnel of the real server its route chose (rs1 ipip, rs2 GUE, rs3 GRE), and the VIP
routes carry the MTU those tunnels leave (1500 - 20 ipip, - 32 GUE; ECMP: the smallest), so the
router answers an oversize DF packet with "fragmentation needed" as a kernel tunnel device would,
and as lvsd does for its tunnels.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from benchlab import IPERF_PORT, LabTools
from tunnel_router import Peer, TunnelRouter, build

from pylvs.lab.netns import run
from pylvs.lab.topologies_dr_tun import CLIENT, GUE_PORT, ROUTER_RSNET, VIP, DrLab, TunLab
from pylvs.rs import state

IPERF_TABLE = "101"      # the router's table for the direct path's iperf3 rule
TUN_DEVICE = "lvsrs0"    # the userspace decapsulator's TUN device on each real server (lvs-rs default)
TUNNEL_OVERHEAD = {"ipip": 20, "gue": 20 + 8 + 4, "gre": 20 + 4}  # outer IPv4 (+ UDP and GUE, + GRE)


class RoutedTools(LabTools):
    """Shared by BenchDrLab and BenchTunLab (whose topology classes provide the rest)."""

    path_role = "router"  # client <-> router: every mode's traffic crosses it, the director's need not
    path_iface = "eth0"
    rips: list[str]
    up: Callable[[], object]  # from the topology class

    def build(self) -> RoutedTools:
        self.up()
        try:
            self.wide_port_range("client")
            self.start_iperf_server(self.rs_names[0], VIP)  # rs1 holds the VIP on lo
        except BaseException:
            self.down()
            raise
        return self

    # -- the direct path --------------------------------------------------------------------

    def route_vip_past_director(self) -> None:
        """The router sends VIP traffic to the real servers itself: HTTP by ECMP, iperf3 to rs1."""
        net = self.net
        mtus = self.route_mtus()
        net.sysctl("router", "net.ipv4.fib_multipath_hash_policy", 1)  # hash on ports too
        hops = [arg for addr in self.rips for arg in ("nexthop", "via", addr)]
        ecmp_mtu = ["mtu", str(min(mtus))] if mtus else []
        net.ip("router", "route", "add", f"{VIP}/32", *ecmp_mtu, *hops)
        rs1_mtu = ["mtu", str(mtus[0])] if mtus else []
        net.ip("router", "route", "add", f"{VIP}/32", "via", self.rips[0], *rs1_mtu, "table", IPERF_TABLE)
        net.ip("router", "rule", "add", "to", VIP, "ipproto", "tcp", "dport", str(IPERF_PORT),
               "lookup", IPERF_TABLE, "priority", "100")

    def route_mtus(self) -> list[int]:
        """The MTU of the router's way to each real server on the direct path; [] for its links' own."""
        return []

    def router_vip_route(self) -> str:
        """The router's route for the VIP, "" when it has none (and so asks by ARP: lvsd answers)."""
        out = self.net.ip("router", "-o", "route", "show", f"{VIP}/32").stdout
        return " ".join(out.replace("\\", " ").split())

    # -- what the checks read ---------------------------------------------------------------

    def director_rx_bytes(self) -> int:
        return self.link_bytes("director", "dip0", ("rx",))

    def director_processes(self) -> list[str]:
        """Pids of every process in the director namespace (none on the direct path)."""
        return run(["ip", "netns", "pids", self.net.name("director")], check=False, timeout=10).stdout.split()

    def rs_holds_vip(self, role: str) -> bool:
        out = self.net.ip(role, "-4", "-o", "addr", "show", "dev", "lo").stdout
        return f" {VIP}/32" in out


class BenchDrLab(RoutedTools, DrLab):
    """DrLab with iperf3 on rs1 (on the VIP)."""


class BenchTunLab(RoutedTools, TunLab):
    """TunLab (rs1 ipip, rs2 GUE, rs3 GRE) with iperf3 on rs1 (on the VIP) and the decapsulators' counters;
    on the direct path, the router's tunnels to the real servers."""

    rsnet_iface = "rs0"  # the router's interface towards the real servers
    tunnels: TunnelRouter | None = None

    def route_vip_past_director(self) -> None:
        """The direct path's routes, then a tunnel to each real server on the router's way to them."""
        super().route_vip_past_director()
        peers = [Peer(self.mac(name, "eth0"), VIP, ROUTER_RSNET, addr, kind, GUE_PORT if kind == "gue" else 0)
                 for name, addr, kind in zip(self.rs_names, self.rips, self.tun_types, strict=True)]
        self.tunnels = TunnelRouter(build(self.net.tmp), f"/run/netns/{self.net.name('router')}",
                                    self.rsnet_iface, peers)

    def route_mtus(self) -> list[int]:
        """What each real server's tunnel leaves of the router's link MTU, as a kernel tunnel device would."""
        link = int(self.net.exec("router", "cat", f"/sys/class/net/{self.rsnet_iface}/mtu").stdout)
        return [link - TUNNEL_OVERHEAD[kind] for kind in self.tun_types]

    def router_tunnel_counters(self) -> dict[str, int]:
        """Frames the router's tunnel program encapsulated, passed and dropped; {} without it."""
        return self.tunnels.counters() if self.tunnels else {}

    def router_egress_filters(self) -> str:
        """tc's view of the router's egress filters towards the real servers."""
        return self.net.exec("router", "tc", "filter", "show", "dev", self.rsnet_iface, "egress").stdout

    def down(self) -> None:
        if self.tunnels:
            self.tunnels.close()
            self.tunnels = None
        super().down()

    def decap_pids(self) -> list[int]:
        """The userspace decapsulators (lvs-rs decap) of the real servers that run one."""
        found = (state.running_decap(os.path.join(self.net.tmp, f"{name}-lvs-rs")) for name in self.rs_names)
        return [pid for pid in found if pid is not None]

    def tunnel_rx_bytes(self) -> int:
        """Bytes the decapsulators injected into the real servers' stacks (TUN device rx), all servers."""
        return sum(self.link_bytes(name, TUN_DEVICE, ("rx",)) for name in self.rs_names if self.has_tun(name))

    def has_tun(self, role: str) -> bool:
        return self.net.exec(role, "ip", "link", "show", "dev", TUN_DEVICE, check=False).returncode == 0


__all__ = ["BenchDrLab", "BenchTunLab", "CLIENT", "VIP"]
