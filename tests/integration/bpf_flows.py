"""FlowEntry recipes for the fast path tests, built as the engine's forwarders state them.

Addresses and ports follow the engine's unit tests (tests/unit/director.py): client side on
ifindex 1, real servers on ifindex 2; deltas come from the engine's own `Deltas`.
"""

from __future__ import annotations

import socket

from pylvs.engine import tcpstate
from pylvs.engine.flow import DIR_IN, DIR_OUT, ENCAP_BY_TUN_TYPE, FlowEntry
from pylvs.engine.forward.rewrite import Deltas
from pylvs.engine.hops import Hop
from pylvs.ipvs_uapi import Method
from tests.unit.director import CLIENT, CLIENT_MAC, DIP_MAC, RIPS, VIP, VIP_MAC, mac, rs_mac

RIP = RIPS[2]
DIP = "10.1.0.1"  # the director's address towards the real servers: the tunnel source
LIP = "10.1.0.200"  # a FULLNAT local address
GUE_PORT = 6080
TC_ACT_OK, TC_ACT_SHOT, TC_ACT_REDIRECT = 0, 2, 7


def ip(text: str) -> bytes:
    return socket.inet_aton(text)


def port(n: int) -> bytes:
    return n.to_bytes(2, "big")


def to_rs(rip: str = RIP, mtu: int = 1500, ifindex: int = 2) -> Hop:
    return Hop(ifindex, mac(rs_mac(rip)), mac(DIP_MAC), mtu)


def to_client(mtu: int = 1500, ifindex: int = 1) -> Hop:
    return Hop(ifindex, mac(CLIENT_MAC), mac(VIP_MAC), mtu)


def entry(method: Method, direction: int, proto: int, src: tuple[str, int], dst: tuple[str, int],
          new_src: tuple[str, int], new_dst: tuple[str, int], hop: Hop, flags: int = 0) -> FlowEntry:
    """One direction: packets src -> dst leave as new_src -> new_dst through `hop`."""
    key_addrs, key_ports = ip(src[0]) + ip(dst[0]), port(src[1]) + port(dst[1])
    addrs, ports = ip(new_src[0]) + ip(new_dst[0]), port(new_src[1]) + port(new_dst[1])
    e = FlowEntry(proto, key_addrs + key_ports, method, direction, addrs, ports,
                  Deltas(key_addrs, addrs, key_ports, ports), hop, flags)
    if proto == 6:
        e.tcp_state = tcpstate.ESTABLISHED  # as the engine offloads TCP connections
    return e


def nat(proto: int = 6, cport: int = 40000, vport: int = 80, rport: int = 8080, rip: str = RIP,
        client: str = CLIENT, vip: str = VIP, hops: tuple[Hop, Hop] | None = None) -> tuple[FlowEntry, FlowEntry]:
    """NAT: CIP:cport -> VIP:vport becomes CIP:cport -> RIP:rport; replies RIP:rport -> CIP:cport from VIP:vport."""
    hop_in, hop_out = hops or (to_rs(rip), to_client())
    inbound = entry(Method.MASQ, DIR_IN, proto, (client, cport), (vip, vport), (client, cport), (rip, rport), hop_in)
    outbound = entry(Method.MASQ, DIR_OUT, proto, (rip, rport), (client, cport), (vip, vport), (client, cport),
                     hop_out)
    return inbound, outbound


def fullnat(proto: int = 6, cport: int = 40000, lport: int = 5001, vport: int = 80,
            rport: int = 8080) -> tuple[FlowEntry, FlowEntry]:
    """FULLNAT: CIP:cport -> VIP:vport becomes LIP:lport -> RIP:rport, and back."""
    inbound = entry(Method.FULLNAT, DIR_IN, proto, (CLIENT, cport), (VIP, vport), (LIP, lport), (RIP, rport),
                    to_rs())
    outbound = entry(Method.FULLNAT, DIR_OUT, proto, (RIP, rport), (LIP, lport), (VIP, vport), (CLIENT, cport),
                     to_client())
    return inbound, outbound


def dr(proto: int = 6, cport: int = 40000, vport: int = 80, mtu: int = 1500) -> FlowEntry:
    """DR: the request keeps its addresses and ports; only MACs and TTL change."""
    same = ((CLIENT, cport), (VIP, vport))
    return entry(Method.ROUTE, DIR_IN, proto, *same, *same, to_rs(mtu=mtu))


def tun(kind: str = "ipip", proto: int = 6, cport: int = 40000, vport: int = 80, mtu: int = 1500,
        flags: int = 0, sport: int = 40001, hop: Hop | None = None) -> FlowEntry:
    """TUN: the request inside DIP -> RIP (ipip, GUE to GUE_PORT from `sport`, or GRE)."""
    same = ((CLIENT, cport), (VIP, vport))
    e = entry(Method.TUNNEL, DIR_IN, proto, *same, *same, hop or to_rs(mtu=mtu), flags)
    e.encap = ENCAP_BY_TUN_TYPE[kind]
    e.outer_src, e.outer_dst = ip(DIP), ip(RIP)
    if kind == "gue":
        e.encap_sport, e.encap_dport = sport, GUE_PORT
    return e

