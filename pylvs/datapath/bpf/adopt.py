"""A restarted lvsd takes over the flows the one before it left in the pinned flow map.

Every IN recipe names a connection: its key holds the client and the virtual address and port, its
rewrite the real server (NAT: the new destination; TUN: the tunnel's outer destination; DR, which
rewrites only MACs: the real server of the service whose next hop has that MAC). The connection is
adopted as a sync backup adopts one (`Engine.adopt`, marked IP_VS_CONN_F_SYNC as those are): bound to
this configuration's service and real server, in the TCP state the kernel last wrote into the entry,
living on from its state's full timeout. Its recipes stay in the map as offloaded
(`FlowOffload.adopt`), their counts so far taken as told. The rest is deleted, so that the kernel no
longer forwards what the engine does not know: recipes whose service or real server is gone from the
configuration, FULLNAT (its local address and port would have to be taken back from the pool), and
recipes without their connection.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

from pylvs.engine import tcpstate
from pylvs.engine.flow import DIR_IN, ENCAP_GUE, KEY, VALUE, VALUE_FIELDS
from pylvs.engine.forward.tun import LOCAL_PORT_RANGE
from pylvs.ipvs_uapi import AF_INET, AF_INET6, CONN_F_INACTIVE, PROTO_TCP, Method
from pylvs.sched import mh
from pylvs.sched.dh import addr_fold
from pylvs.sync.proto import SyncConn

if TYPE_CHECKING:
    from pylvs.datapath.bpf.maps import FlowMap
    from pylvs.datapath.bpf.offload import FlowOffload
    from pylvs.engine.conntrack import Conn
    from pylvs.engine.engine import Engine
    from pylvs.engine.flow import FlowEntry
    from pylvs.engine.services import RealServer, VirtualService

_FIELD = {name: i for i, (name, _, _) in enumerate(VALUE_FIELDS)}


class Adopted(NamedTuple):
    conns: int    # connections adopted with their recipes
    deleted: int  # recipes deleted: nothing in this configuration to bind them to


def _addr(family: int, addr16: bytes) -> bytes:
    return addr16[12:] if family == AF_INET else addr16


def _services(engine: Engine, proto: int, vaddr: bytes, vport: int) -> list[VirtualService]:
    """Where a packet to vaddr:vport would be looked up (exact, port 0), then the fwmark services of the
    family (the mark itself is not in the recipe)."""
    found = [engine.table.find(proto, vaddr, vport), engine.table.find(proto, vaddr, 0)]
    return [svc for svc in found if svc is not None] + list(engine.table.fwmarks(vaddr).values())


def _dest(engine: Engine, svc: VirtualService, method: int, value: tuple, family: int,
          dport: int) -> RealServer | None:
    for dest in svc.dests:
        if dest.method != method:
            continue
        if method == Method.MASQ and dest.addr == _addr(family, value[_FIELD["new_daddr"]]) \
                and (dest.port or dport) == dport:
            return dest
        if method == Method.TUNNEL and dest.addr == _addr(family, value[_FIELD["outer_daddr"]]):
            return dest
        if method == Method.ROUTE:
            hop = engine.routes.hop(dest.addr)
            if hop is not None and hop.eth[:6] == value[_FIELD["dmac"]]:
                return dest
    return None


def sync_conn(engine: Engine, key: bytes, value: tuple) -> SyncConn | None:
    """The connection an IN recipe belongs to, as a sync message would carry it (None: nothing here fits)."""
    family, proto, _pad, saddr, daddr, sport, dport = KEY.unpack(key)
    method = value[_FIELD["method"]]
    if method not in (Method.MASQ, Method.ROUTE, Method.TUNNEL):
        return None  # FULLNAT: the local address and port are not the engine's to take back here
    vaddr = _addr(family, daddr)
    rport = int.from_bytes(value[_FIELD["new_dport"]], "big")
    for svc in _services(engine, proto, vaddr, int.from_bytes(dport, "big")):
        dest = _dest(engine, svc, method, value, family, rport)
        if dest is None:
            continue
        state = value[_FIELD["tcp_state"]] if proto == PROTO_TCP else 0
        active = proto == PROTO_TCP and state == tcpstate.ESTABLISHED
        return SyncConn(proto, _addr(family, saddr), sport, vaddr, dport, dest.addr,
                        dest.port.to_bytes(2, "big"),  # as configured: what Engine.adopt looks the real server up by
                        flags=int(method) | (0 if active else CONN_F_INACTIVE), state=state,
                        fwmark=svc.fwmark, ipv6=family != AF_INET)
    return None


def resolve_hops(engine: Engine, conn: Conn) -> None:
    """The next hops of a connection no packet has crossed here yet (the engine looks them up at the
    first packet of each direction): towards the real server, and back towards the client; and a
    tunnel's outer source, as the kernel's template had it (written again after a neighbour's MAC
    changes, a recipe without one would leave with source 0.0.0.0)."""
    for f, towards in ((conn.in_flow, conn.daddr), (conn.out_flow, conn.caddr)):
        if f is not None and f.hop is None:
            f.hop = engine.egress.hop(towards)
    f = conn.in_flow
    if f is not None and f.method == Method.TUNNEL and not f.outer_src and f.hop is not None:
        f.outer_src = tunnel_source(engine, f) or b""
        if f.encap == ENCAP_GUE:
            f.encap_sport = gue_source_port(conn.caddr, conn.cport, conn.vport)


def gue_source_port(caddr: bytes, cport: bytes, vport: bytes) -> int:
    """GUE's outer source port as the program picks it for a connection it makes (pylvs_sched.bpf.h
    ks_gue_sport): hsiphash of the client's address XOR both ports, scaled as udp_flow_src_port."""
    value = (addr_fold(caddr) ^ (int.from_bytes(cport, "big") << 16 | int.from_bytes(vport, "big"))) & 0xFFFFFFFF
    h = mh.hash1(value)
    h = (h ^ (h << 16)) & 0xFFFFFFFF
    lo, hi = LOCAL_PORT_RANGE
    return ((h * (hi - lo)) >> 32) + lo


def tunnel_source(engine: Engine, f: FlowEntry) -> bytes | None:
    """The outer source address of tunnel recipe `f` (its hop known): an address of the egress link."""
    if len(f.outer_dst) == 16:
        return engine.inet6.egress6.source_address(f.hop)
    return engine.egress.source_address(engine.egress.interface_for(f.hop))


def _keep_tunnel(f: FlowEntry, value: tuple) -> None:
    """The tunnel's outer source and GUE source port as the previous lvsd chose them (this one's are
    chosen at the first packet it tunnels itself, with a seed of its own)."""
    family = AF_INET if f.alen == 4 else AF_INET6
    if any(value[_FIELD["outer_saddr"]]):
        f.outer_src = _addr(family, value[_FIELD["outer_saddr"]])
    f.encap_sport = int.from_bytes(value[_FIELD["encap_sport"]], "big")


def adopt(engine: Engine, offload: FlowOffload, flows: FlowMap, now: float) -> Adopted:
    """Adopt the connections of the recipes in `flows`; delete the recipes nothing claims."""
    pinned = dict(flows.items())
    claimed: set[bytes] = set()
    conns = 0
    for key, raw in pinned.items():
        value = VALUE.unpack(raw)
        if value[_FIELD["direction"]] != DIR_IN:
            continue
        rec = sync_conn(engine, key, value)
        conn = engine.adopt(rec, now) if rec is not None else None
        if conn is None:
            continue
        resolve_hops(engine, conn)
        recipes = []
        for f in (conn.in_flow, conn.out_flow):
            if f is None or f.pack_key() not in pinned:
                continue
            if f.method == Method.TUNNEL:
                _keep_tunnel(f, VALUE.unpack(pinned[f.pack_key()]))
            recipes.append((f, pinned[f.pack_key()]))
            claimed.add(f.pack_key())
        offload.adopt(conn, recipes)
        conns += 1
    deleted = 0
    for key in pinned.keys() - claimed:
        deleted += flows.delete_key(key)
    return Adopted(conns, deleted)
