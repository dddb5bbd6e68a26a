"""Kernel scheduling of FULLNAT (pylvs_sched.bpf.h ks_claim, pylvs.datapath.bpf.ksched) on crafted SYNs
(BPF_PROG_TEST_RUN).

The engine of the unit tests, with TOA off (lvsd --fullnat-toa 0; with TOA on: the last test) and two
local addresses, publishes an rr FULLNAT service. The program must send a SYN from a local address and a
port of its part of the range to the real server (scapy decodes the rewrite and checks both checksums),
make the reply entry that turns the real server's answer back into VIP -> client, skip a local port whose
reply entry exists, and punt (counted) once every port it probes is taken. The engine adopts the
connection at the local address and port the program took. Needs root (BPF), so it lives with the
integration tests.
"""

from __future__ import annotations

import pytest
from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether

from pylvs.datapath.bpf.events import SchedEvent
from pylvs.datapath.bpf.ksched import KernelScheduler
from pylvs.datapath.bpf.offload import FlowOffload, pack_key
from pylvs.engine import tcpstate
from pylvs.engine.engine import Engine
from pylvs.engine.flow import DIR_IN, DIR_OUT, F_ENGINE_ONLY, F_TOA, VALUE, VALUE_FIELDS
from pylvs.engine.forward.fullnat import LPORT_MAX, LPORT_MIN
from pylvs.engine.services import Method, VirtualService, pack_ip
from tests.integration.bpf_flows import TC_ACT_OK, TC_ACT_REDIRECT
from tests.unit.director import (
    CLIENT,
    CLIENT_MAC,
    DIP_MAC,
    RIPS,
    VIP,
    VIP_MAC,
    checksums_valid,
    frame,
    from_client,
    from_rs,
    make_engine,
    rs_mac,
)

LIPS = ["10.1.0.200", "10.1.0.201"]
PROBES = 8  # KSCHED_LPORT_PROBES
VALUE_FIELD = {name: i for i, (name, _, _) in enumerate(VALUE_FIELDS)}


@pytest.fixture
def published(fast):
    """publish(rips, toa) -> (engine, service, its KernelScheduler); everything withdrawn afterwards."""
    made = []

    def publish(rips=None, toa=False, lips=LIPS) -> tuple[Engine, VirtualService, KernelScheduler]:
        engine = make_engine(Method.FULLNAT, rips=rips)
        engine.settings.fullnat_toa = toa  # as lvsd --fullnat-toa sets it, before the engine is made
        for f in engine.fullnat_forwarders():
            f.toa = toa
        svc = engine.table.get(6, pack_ip(VIP), 80)
        for lip in lips:
            engine.table.add_laddr(svc, pack_ip(lip))
        ks = KernelScheduler(engine, fast)
        ks.publish()
        made.append(ks)
        return engine, svc, ks

    yield publish
    for ks in made:
        ks.close()
    fast.flows.clear()
    fast.events.read()


def syn(cport: int, client: str = CLIENT) -> bytes:
    return bytes(from_client(TCP(sport=cport, dport=80, flags="S", seq=1000, options=[("MSS", 1460)]), src=client))


def forwarded(fast, frame: bytes) -> Ether:
    verdict, out, _ = fast.test_run(frame)
    assert verdict == TC_ACT_REDIRECT
    return Ether(out)


def local_of(pkt: Ether) -> tuple[str, int]:
    return pkt[IP].src, pkt[TCP].sport


def pair(c: int) -> tuple[str, int]:
    """The program's c-th local (address, port): addresses in turn, each one's ports in order."""
    return LIPS[c % len(LIPS)], LPORT_MIN + (c // len(LIPS)) % (LPORT_MAX - LPORT_MIN + 1)


def position(local: tuple[str, int]) -> int:
    return (local[1] - LPORT_MIN) * len(LIPS) + LIPS.index(local[0])


def out_key(rip: str, local: tuple[str, int]) -> bytes:
    return pack_key(6, pack_ip(rip) + pack_ip(local[0]) + (8080).to_bytes(2, "big") + local[1].to_bytes(2, "big"))


def occupy(fast, key: bytes) -> None:
    """A reply entry of some other connection under `key` (what the program must not overwrite)."""
    rc = fast.lib.bpf_map_update_elem(fast.flows.fd, key, bytes(VALUE.size), 0)
    fast.lib.check(rc, "occupying a key")


def test_syn_leaves_from_a_local_address_and_the_reply_goes_back_to_the_client(fast, published):
    engine, svc, ks = published()
    created = ks.counters.read()["created"]
    seen = []
    for i in range(2 * len(RIPS)):
        pkt = forwarded(fast, syn(41000 + i))
        assert pkt.src == DIP_MAC and pkt.dst == rs_mac(pkt[IP].dst)
        assert pkt[IP].dst in RIPS and pkt[TCP].dport == 8080 and pkt[IP].ttl == 63
        assert pkt[TCP].flags == "S" and pkt[TCP].seq == 1000 and pkt[TCP].options == [("MSS", 1460)]
        assert checksums_valid(pkt)
        lip, lport = local_of(pkt)
        assert lip in LIPS and LPORT_MIN <= lport <= LPORT_MAX
        seen.append((pkt[IP].dst, lip, lport))
    assert ks.counters.read()["created"] == created + 2 * len(RIPS)
    assert len(set(seen)) == len(seen)  # a reply tuple per connection
    assert {s[1] for s in seen} == set(LIPS)  # the local addresses in turn
    # A cursor per real server: each one's tuples come round only after all its pairs (its TIME_WAIT).
    for rip in RIPS:
        mine = [position(s[1:]) for s in seen if s[0] == rip]
        assert mine == list(range(mine[0], mine[0] + len(mine))), (rip, seen)
    # The reply entry: the real server's SYN+ACK to LIP:lport goes back to the client from the VIP.
    rip, lip, lport = seen[0]
    value = VALUE.unpack(fast.flows.lookup(out_key(rip, (lip, lport))))
    assert value[VALUE_FIELD["direction"]] == DIR_OUT and value[VALUE_FIELD["tcp_state"]] == tcpstate.SYN_RECV
    back = forwarded(fast, bytes(from_rs(rip, TCP(sport=8080, dport=lport, flags="SA", seq=5000, ack=1001), dst=lip)))
    assert back.dst == CLIENT_MAC and back.src == VIP_MAC
    assert (back[IP].src, back[TCP].sport, back[IP].dst, back[TCP].dport) == (VIP, 80, CLIENT, 41000)
    assert back[TCP].flags == "SA" and back[TCP].ack == 1001 and back[IP].ttl == 63 and checksums_valid(back)
    # The client's ACK and data go on by the request entry.
    data = forwarded(fast, bytes(from_client(TCP(sport=41000, dport=80, flags="PA", seq=1001, ack=5001) / b"GET /")))
    assert (data[IP].src, data[TCP].sport, data[IP].dst, data[TCP].dport) == (lip, lport, rip, 8080)
    assert bytes(data[TCP].payload) == b"GET /" and checksums_valid(data)
    events = [e for e in fast.events.read() if isinstance(e, SchedEvent)]
    assert [(e.laddr, int.from_bytes(e.lport, "big")) for e in events] == [(pack_ip(s[1]), s[2]) for s in seen]


def test_the_engine_adopts_it_at_the_local_address_and_port_the_kernel_took(fast, published):
    engine, svc, ks = published(rips=[RIPS[0]])
    offload = FlowOffload(engine, fast.flows)
    offload.ksched = ks
    lip, lport = local_of(forwarded(fast, syn(42000)))
    offload.apply(fast.events.read())
    assert offload.adopted == 1 and offload.refused == 0 and offload.rerouted == 0
    key = pack_ip(CLIENT) + pack_ip(VIP) + (42000).to_bytes(2, "big") + (80).to_bytes(2, "big")
    conn, direction = engine.conns.lookup(6, key)
    local = next(la for la in svc.laddrs if la.addr == pack_ip(lip))
    assert direction == DIR_IN and conn.state == tcpstate.SYN_RECV and conn.dest.method == Method.FULLNAT
    assert (conn.laddr, conn.lport) == (pack_ip(lip), lport.to_bytes(2, "big")) and conn.local is local
    assert conn.out_key == pack_ip(RIPS[0]) + pack_ip(lip) + (8080).to_bytes(2, "big") + lport.to_bytes(2, "big")
    assert engine.conns.lookup(6, conn.out_key) == (conn, DIR_OUT)
    assert local.conns == 1 and sum(la.conns for la in svc.laddrs) == 1 and svc.stats.conns == 1
    # The engine's recipes are the program's: the same rewrite, the same checksum deltas.
    for f in (conn.in_flow, conn.out_flow):
        stored = VALUE.unpack(fast.flows.lookup(f.pack_key()))
        built = VALUE.unpack(f.pack_value())
        for name in ("method", "new_saddr", "new_daddr", "new_sport", "new_dport", "csum_ip", "csum_l4",
                     "csum_l4_partial"):
            assert stored[VALUE_FIELD[name]] == built[VALUE_FIELD[name]], (f.direction, name)
    # The engine's own allocator shares the range: a port whose reply key the program took for a connection
    # not adopted yet is skipped, and the engine claims its own in the map (a placeholder, engine-only).
    assert engine.forwarders[Method.FULLNAT].claim is not None
    pending = local_of(forwarded(fast, syn(42002)))  # the program's next connection (CREATED not read yet)
    plocal = next(la for la in svc.laddrs if la.addr == pack_ip(pending[0]))
    plocal.next_port = pending[1] - LPORT_MIN - 1  # the engine's cursor comes to that very port next
    svc.laddr_cursor = svc.laddrs.index(plocal)
    engine.process(frame(from_client(TCP(sport=42001, dport=80, flags="S"), src="192.0.2.77")), 1, 0)
    mine, _ = engine.conns.lookup(6, pack_ip("192.0.2.77") + pack_ip(VIP) + (42001).to_bytes(2, "big")
                                  + (80).to_bytes(2, "big"))
    assert (mine.laddr, int.from_bytes(mine.lport, "big")) == (plocal.addr, pending[1] + 1)
    placeholder = VALUE.unpack(fast.flows.lookup(pack_key(6, mine.out_key)))
    assert placeholder[VALUE_FIELD["flags"]] & F_ENGINE_ONLY and placeholder[VALUE_FIELD["method"]] == Method.FULLNAT
    offload.apply(fast.events.read())
    assert offload.adopted == 2 and offload.refused == 0
    # Gone, the engine's connection gives its claim back.
    engine._expire(mine)
    offload.drain(0.0)
    assert fast.flows.lookup(pack_key(6, mine.out_key)) is None
    # Gone from the table: its local port is free again.
    held = local.conns
    engine._expire(conn)
    assert local.conns == held - 1 and engine.conns.lookup(6, conn.out_key) is None
    offload.close()


def test_a_taken_local_port_is_skipped(fast, published):
    _, _, ks = published(rips=[RIPS[0]])
    c = position(local_of(forwarded(fast, syn(43000)))) + 1
    occupy(fast, out_key(RIPS[0], pair(c)))  # the next pair's reply entry belongs to another connection
    before = ks.counters.read()
    pkt = forwarded(fast, syn(43001))
    assert local_of(pkt) == pair(c + 1) and checksums_valid(pkt)
    assert VALUE.unpack(fast.flows.lookup(out_key(RIPS[0], pair(c))))[VALUE_FIELD["method"]] == 0  # left alone
    after = ks.counters.read()
    assert after["created"] == before["created"] + 1 and after["punt_lport"] == before["punt_lport"]


def test_every_probe_taken_punts_the_syn(fast, published):
    _, _, ks = published(rips=[RIPS[0]])
    c = position(local_of(forwarded(fast, syn(44000)))) + 1
    for i in range(PROBES):
        occupy(fast, out_key(RIPS[0], pair(c + i)))
    fast.events.read()
    before = ks.counters.read()
    sent = syn(44001)
    assert fast.test_run(sent)[:2] == (TC_ACT_OK, sent)  # to the engine, unchanged
    after = ks.counters.read()
    assert after["punt_lport"] == before["punt_lport"] + 1 and after["created"] == before["created"]
    key = pack_key(6, pack_ip(CLIENT) + pack_ip(VIP) + (44001).to_bytes(2, "big") + (80).to_bytes(2, "big"))
    assert fast.flows.lookup(key) is None and fast.events.read() == []
    # The cursor went on past the probes: the next SYN takes the pair after them.
    assert local_of(forwarded(fast, syn(44002))) == pair(c + PROBES)


@pytest.mark.parametrize("case", ["proxy_protocol", "no_ipv4_lip"])
def test_the_proxy_protocol_or_no_local_address_stays_the_engines(fast, published, case):
    engine, svc, ks = published(toa=True, lips=[] if case == "no_ipv4_lip" else LIPS)
    if case == "proxy_protocol":
        engine.table.edit_service(VirtualService(6, svc.addr, 80, "rr", proxy_protocol="v2"))
        ks.publish()
    before = ks.counters.read()
    sent = syn(45000)
    assert fast.test_run(sent)[:2] == (TC_ACT_OK, sent)
    after = ks.counters.read()
    # rr: a usable real server the program cannot take makes the whole sequence the engine's (the only
    # service: nothing is published, punt_off).
    assert after["punt_off"] + after["punt_service"] == before["punt_off"] + before["punt_service"] + 1
    assert after["created"] == before["created"]


def test_with_toa_the_syn_is_scheduled_here_and_the_first_ack_takes_toa_once(fast, published):
    """TOA on (lvsd's default): the SYN is the kernel's, the request entry it makes is marked F_TOA, the
    client's first ACK leaves with TOA (the client's port and address), the engine adopts the connection
    TOA-pending and learns from the report that it went out; the next segment has none."""
    engine, svc, ks = published(rips=[RIPS[0]], toa=True)
    offload = FlowOffload(engine, fast.flows)
    offload.ksched = ks
    created = ks.counters.read()["created"]
    pkt = forwarded(fast, syn(46000))
    lip, lport = local_of(pkt)
    assert ks.counters.read()["created"] == created + 1 and LPORT_MIN <= lport <= LPORT_MAX
    assert pkt[TCP].flags == "S" and not [o for o in pkt[TCP].options if o[0] == 254] and checksums_valid(pkt)
    key = pack_ip(CLIENT) + pack_ip(VIP) + (46000).to_bytes(2, "big") + (80).to_bytes(2, "big")
    stored = VALUE.unpack(fast.flows.lookup(pack_key(6, key)))
    assert stored[VALUE_FIELD["flags"]] & F_TOA and not stored[VALUE_FIELD["flags"]] & F_ENGINE_ONLY
    offload.apply(fast.events.read())
    conn, _ = engine.conns.lookup(6, key)
    assert offload.adopted == 1 and conn.slow is not None and conn.in_flow.flags & F_TOA
    forwarded(fast, bytes(from_rs(RIPS[0], TCP(sport=8080, dport=lport, flags="SA", seq=5000, ack=1001), dst=lip)))
    sent = Ether(bytes(from_client(TCP(sport=46000, dport=80, flags="A", seq=1001, ack=5001))))
    out = forwarded(fast, bytes(sent))
    assert (out[IP].src, out[TCP].sport, out[IP].dst, out[TCP].dport) == (lip, lport, RIPS[0], 8080)
    assert [o for o in out[TCP].options if o[0] == 254] == [(254, (46000).to_bytes(2, "big") + pack_ip(CLIENT))]
    assert out[IP].len == sent[IP].len + 8 and out[TCP].dataofs == sent[TCP].dataofs + 2 and checksums_valid(out)
    offload.apply(fast.events.read())
    assert conn.state == tcpstate.ESTABLISHED and conn.slow is None and not conn.in_flow.flags & F_TOA
    assert offload.mismatches == 0
    data = forwarded(fast, bytes(from_client(TCP(sport=46000, dport=80, flags="PA", seq=1001, ack=5001) / b"GET /")))
    assert not [o for o in data[TCP].options if o[0] == 254] and bytes(data[TCP].payload) == b"GET /"
    offload.close()

