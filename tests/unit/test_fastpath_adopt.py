"""A restarted lvsd adopts the flows left in the pinned map; recipes follow a neighbour's new MAC.

A map of packed recipes (as the kernel holds them) is filled by one engine's offload; a second
engine, as a restarted lvsd builds it from the same configuration, adopts them."""

from __future__ import annotations

import struct

import pytest
from scapy.layers.inet import TCP

from pylvs.datapath.bpf.adopt import adopt, resolve_hops
from pylvs.datapath.bpf.offload import FlowOffload
from pylvs.engine import tcpstate
from pylvs.engine.flow import VALUE, VALUE_FIELDS
from pylvs.engine.services import Method, pack_ip
from pylvs.ipvs_uapi import CONN_F_INACTIVE
from tests.unit.director import RIPS, frame, from_client, from_rs, mac, make_engine, rs_mac

COUNTS = struct.Struct("=QQQ")  # the value ends with packets, bytes, last_seen_ns
_COUNTS = VALUE.size - COUNTS.size


class PackedFlowMap:
    """FlowMap over a dict of packed keys and values, as the kernel's map holds them."""

    def __init__(self) -> None:
        self.entries: dict[bytes, bytes] = {}

    def put(self, entry) -> None:
        self.entries[entry.pack_key()] = entry.pack_value()

    def delete_key(self, key: bytes) -> bool:
        return self.entries.pop(key, None) is not None

    def delete(self, entry) -> bool:
        return self.delete_key(entry.pack_key())

    def refresh(self, entry) -> bool:
        raw = self.entries.get(entry.pack_key())
        if raw is None:
            return False
        entry.packets, entry.bytes, entry.last_seen_ns = VALUE.unpack(raw)[-3:]
        return True

    def take(self, entry) -> bool:
        return self.refresh(entry) and self.delete(entry)

    def items(self):
        return list(self.entries.items())

    def forward(self, key: bytes, packets: int, nbytes: int, at: float) -> None:
        """The kernel forwarding packets by the entry under `key`."""
        raw = self.entries[key]
        old_packets, old_bytes, _ = COUNTS.unpack_from(raw, _COUNTS)
        self.entries[key] = raw[:_COUNTS] + COUNTS.pack(old_packets + packets, old_bytes + nbytes, int(at * 1e9))


def established(method: Method):
    """An engine with one established connection offloaded into a packed map."""
    engine = make_engine(method=method)
    flows = PackedFlowMap()
    offload = FlowOffload(engine, flows)
    engine.process(frame(from_client(TCP(sport=40000, dport=80, flags="S"))), 1, 1.0)
    (conn,) = engine.conns.conns()
    if method == Method.MASQ:
        engine.process(frame(from_rs(RIPS[2], TCP(sport=8080, dport=40000, flags="SA"))), 2, 1.1)
    engine.process(frame(from_client(TCP(sport=40000, dport=80, flags="A"))), 1, 1.2)
    offload.drain(1.2, -1)
    assert len(offload) == 1
    return engine, flows, offload, conn


@pytest.mark.parametrize("method", [Method.MASQ, Method.ROUTE, Method.TUNNEL])
def test_a_restarted_engine_adopts_the_connection_of_the_pinned_recipes(method):
    _, flows, _, old = established(method)
    pinned = dict(flows.entries)
    engine = make_engine(method=method)  # the next lvsd, same configuration
    offload = FlowOffload(engine, flows)
    found = adopt(engine, offload, flows, 5.0)
    assert (found.conns, found.deleted) == (1, 0) and len(offload) == 1
    (conn,) = engine.conns.conns()
    assert (conn.caddr, conn.cport, conn.vaddr, conn.vport) == (old.caddr, old.cport, old.vaddr, old.vport)
    assert (conn.daddr, conn.dport, conn.dest.addr) == (old.daddr, old.dport, pack_ip(RIPS[2]))
    assert conn.state == tcpstate.ESTABLISHED and not conn.flags & CONN_F_INACTIVE
    assert conn.dest.activeconns == 1 and conn.dest.inactconns == 0
    assert flows.entries == pinned  # the same recipes: left as the kernel has them
    # What the kernel forwards from now on is counted; the counts from before were the other lvsd's.
    flows.forward(conn.in_flow.pack_key(), 10, 5000, 6.0)
    offload.refresh_all()
    assert (conn.dest.stats.inpkts, conn.dest.stats.inbytes) == (10, 5000)
    assert conn.expires == pytest.approx(6.0 + conn.timeout)
    engine.process(frame(from_client(TCP(sport=40000, dport=80, flags="R"))), 1, 7.0)
    offload.drain(7.0, 1)
    assert flows.entries == {}  # the engine's own change takes them out, as for its own connections


def test_recipes_nothing_here_takes_are_deleted():
    _, flows, _, _ = established(Method.MASQ)
    engine = make_engine(rips=RIPS[:2])  # the real server the connection went to is gone
    found = adopt(engine, FlowOffload(engine, flows), flows, 5.0)
    assert (found.conns, found.deleted) == (0, 2) and flows.entries == {} and engine.conns.conns() == []


DMAC = [name for name, _, _ in VALUE_FIELDS].index("dmac")
OUTER_SADDR = [name for name, _, _ in VALUE_FIELDS].index("outer_saddr")


def test_a_recipe_with_an_old_mac_is_rewritten_at_adoption_with_its_counts():
    _, flows, _, old = established(Method.MASQ)
    flows.forward(old.in_flow.pack_key(), 3, 300, 2.0)
    engine = make_engine()
    hop = engine.routes.hop(pack_ip(RIPS[2]))
    hop.eth = mac("02:00:00:00:99:99") + hop.eth[6:]  # the real server changed its MAC while no lvsd ran
    assert adopt(engine, FlowOffload(engine, flows), flows, 5.0).conns == 1
    value = VALUE.unpack(flows.entries[old.in_flow.pack_key()])
    assert value[DMAC] == mac("02:00:00:00:99:99") and value[-3:-1] == (3, 300)


def test_a_dr_recipe_names_its_real_server_by_mac():
    _, flows, _, _ = established(Method.ROUTE)
    engine = make_engine(method=Method.ROUTE)
    hop = engine.routes.hop(pack_ip(RIPS[2]))
    hop.eth = mac("02:00:00:00:99:99") + hop.eth[6:]  # no real server of the service has the recipe's MAC
    assert adopt(engine, FlowOffload(engine, flows), flows, 5.0) == (0, 1)


def test_recipes_follow_a_next_hop_whose_mac_changed():
    engine, flows, offload, conn = established(Method.MASQ)
    hop = engine.routes.hop(pack_ip(RIPS[2]))
    assert VALUE.unpack(flows.entries[conn.in_flow.pack_key()])[DMAC] == mac(rs_mac(RIPS[2]))
    flows.forward(conn.in_flow.pack_key(), 4, 400, 3.0)
    inpkts, inbytes = conn.dest.stats.inpkts, conn.dest.stats.inbytes
    hop.eth = mac("02:00:00:00:77:77") + hop.eth[6:]  # as KernelRoutes does on a neighbour event
    assert offload.rehop([engine.routes.hop(pack_ip("10.1.0.99")) or hop.__class__(9, bytes(6), bytes(6))]) == 0
    assert offload.rehop([hop]) == 1
    assert VALUE.unpack(flows.entries[conn.in_flow.pack_key()])[DMAC] == mac("02:00:00:00:77:77")
    assert (conn.dest.stats.inpkts - inpkts, conn.dest.stats.inbytes - inbytes) == (4, 400)  # read, then rewritten
    assert len(offload) == 1


def test_a_kernel_scheduled_tunnel_connection_gets_its_tunnel_source():
    # The program made the recipe from a template with the outer source; the engine's copy needs it
    # too, or rewritten after a MAC change the recipe would tunnel from 0.0.0.0.
    _, _, _, engine_made = established(Method.TUNNEL)  # its source: set by the first packet it tunnelled
    engine = make_engine(method=Method.TUNNEL)
    svc = next(iter(engine.table))
    dest = next(d for d in svc.dests if d.addr == engine_made.daddr)
    conn = engine.adopt_kernel(svc, dest, engine_made.in_key, 1.0)
    assert conn.in_flow.outer_src == b""
    resolve_hops(engine, conn)
    assert conn.in_flow.hop is not None
    assert conn.in_flow.outer_src == engine_made.in_flow.outer_src != b""
    assert VALUE.unpack(conn.in_flow.pack_value())[OUTER_SADDR] == VALUE.unpack(
        engine_made.in_flow.pack_value())[OUTER_SADDR]
