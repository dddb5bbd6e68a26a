"""IPv6 beside IPv4 in the NAT and DR labs (`NatLab(ipv6=True)`, `DrLab(ipv6=True)`).

The same pictures with documentation-range IPv6 (2001:db8::/32) added to every link; the IPv4 side
is unchanged. Addresses are added with `nodad`, so nothing waits for duplicate address detection.

NAT: client 2001:db8:10::10 --- vip0 2001:db8:10::1 [director] dip0 2001:db8:2::1 --- rs 2001:db8:2::11..
     VIP 2001:db8:10::100 (engine: neighbour discovery), real servers' default route via the DIP.
DR:  client 2001:db8:10::10 --- [router 2001:db8:10::1, 2001:db8:2::fe] --- LAN: director 2001:db8:2::1,
     rs 2001:db8:2::11.. holding VIP 2001:db8:2::100 on lo (IPv6 answers neighbour solicitations
     only for addresses on the receiving interface: no arp_ignore needed).
"""

from __future__ import annotations

from pylvs.lab.netns import Netns

CLIENT6 = "2001:db8:10::10"
OUTSIDE6 = "2001:db8:10::1"  # the NAT director's client side, or the DR lab's router
NAT_VIP6 = "2001:db8:10::100"
DIP6 = "2001:db8:2::1"
ROUTER_LAN6 = "2001:db8:2::fe"
DR_VIP6 = "2001:db8:2::100"


def rip6(i: int) -> str:
    return f"2001:db8:2::{0x10 + i:x}"


def url6(addr: str, port: int = 80, path: str = "/") -> str:
    return f"http://[{addr}]:{port}{path}"


def addr6(net: Netns, role: str, ifname: str, addr: str, plen: int = 64) -> None:
    net.ip(role, "addr", "add", f"{addr}/{plen}", "dev", ifname, "nodad")


def nat(net: Netns, rs_names: list[str]) -> None:
    """IPv6 on the NAT lab's links (called once its IPv4 topology is built)."""
    addr6(net, "client", "eth0", CLIENT6)
    addr6(net, "director", "vip0", OUTSIDE6)
    addr6(net, "director", "dip0", DIP6)
    for i, name in enumerate(rs_names, start=1):
        addr6(net, name, "eth0", rip6(i))
        net.ip(name, "-6", "route", "add", "default", "via", DIP6)


def dr(net: Netns, rs_names: list[str]) -> None:
    """IPv6 on the DR lab's links: a routing router, the director on the LAN, the VIP on the real servers' lo."""
    addr6(net, "client", "eth0", CLIENT6)
    net.ip("client", "-6", "route", "add", "default", "via", OUTSIDE6)
    addr6(net, "router", "eth0", OUTSIDE6)
    addr6(net, "router", "lan0", ROUTER_LAN6)
    net.sysctl("router", "net.ipv6.conf.all.forwarding", 1)
    addr6(net, "director", "dip0", DIP6)
    net.ip("director", "-6", "route", "add", "default", "via", ROUTER_LAN6)
    for i, name in enumerate(rs_names, start=1):
        addr6(net, name, "eth0", rip6(i))
        net.ip(name, "-6", "route", "add", "default", "via", ROUTER_LAN6)
        addr6(net, name, "lo", DR_VIP6, 128)


__all__ = ["CLIENT6", "DIP6", "DR_VIP6", "NAT_VIP6", "OUTSIDE6", "ROUTER_LAN6", "addr6", "dr", "nat", "rip6", "url6"]
