"""NAT and FULLNAT on the wire, packet by packet as the kernel's IPVS answers (issue 18): a jumbo-frame
client (link MTU 9000) and real servers on a 1500-byte LAN. Frames are built with scapy, sent from the
client's namespace, and what arrives at the client and the real server is read back with scapy."""

from __future__ import annotations

import pytest
from scapy.layers.inet import IPerror, UDPerror

from pylvs.lab.topology import CLIENT, VIP, NatLab, rip
from tests.integration import wire
from tests.integration.labs import flushed, shared_lab

RIP = rip(1)
LIP = "192.0.2.200"  # FULLNAT's local address: what the real server sees instead of the client


@pytest.fixture(scope="module")
def jumbo_lab():
    yield from shared_lab(NatLab(client_mtu=9000, n_rs=1))


@pytest.fixture(params=["nat", "fullnat"])
def lab(request, jumbo_lab):
    # A fragmentation needed from an earlier test left the client a path MTU of 1500 to the VIP.
    jumbo_lab.net.ip("client", "route", "flush", "cache")
    jumbo_lab.lvsadm("-A", "-u", f"{VIP}:53", "-s", "rr")
    if request.param == "fullnat":
        jumbo_lab.lvsadm("-P", "-u", f"{VIP}:53", "-z", LIP)
    flag = "-m" if request.param == "nat" else "--fullnat"
    jumbo_lab.lvsadm("-a", "-u", f"{VIP}:53", "-r", f"{RIP}:{jumbo_lab.udp_port}", flag)
    jumbo_lab.rs_sees = CLIENT if request.param == "nat" else LIP
    # Source ports of their own per method and test: a connection outlives the flushed service.
    jumbo_lab.sports = 40000 if request.param == "nat" else 41000
    yield from flushed(jumbo_lab)


def datagram(sport: int, size: int, ip_id: int, df: bool = False, ttl: int = 64) -> bytes:
    return wire.datagram(CLIENT, VIP, sport, size, ip_id, df, ttl)


def exchange(lab, sport: int, *packets: bytes):
    return wire.exchange(lab, CLIENT, VIP, sport, list(packets), rs_sees=lab.rs_sees)


def test_too_big_with_df_gets_fragmentation_needed_with_the_real_server_links_mtu(lab):
    big = datagram(lab.sports + 1, 2000, 1111, df=True)
    answers, icmps, at_rs = exchange(lab, lab.sports + 1, big)
    assert len(answers) == 1 and answers[0].startswith(f"rs1 {lab.rs_sees}:".encode())  # the small one went through
    assert len(icmps) == 1, [p.summary() for p in icmps]
    # The kernel decrements the TTL before the MTU check, and rewrites the addresses after it.
    wire.assert_kernel_error(icmps[0], VIP, 64, 3, 4, wire.routed(big, 63), mtu=1500)
    assert icmps[0][IPerror].dst == VIP and icmps[0][UDPerror].dport == 53
    assert [p.id for p in at_rs] == [1]  # nothing of the big one reached the real server


def test_too_big_without_df_arrives_as_two_fragments_and_is_answered(lab):
    answers, icmps, at_rs = exchange(lab, lab.sports + 2, datagram(lab.sports + 2, 2000, 2222))
    wire.assert_fragments(at_rs, 2222, RIP, 63)
    assert len(answers) == 2 and all(a.startswith(b"rs1 ") for a in answers)  # reassembled and answered
    assert answers[1].endswith(b"q" * 64)
    assert icmps == []


def test_ttl_one_gets_time_exceeded_from_the_vip(lab):
    last = datagram(lab.sports + 3, 100, 3333, ttl=1)
    answers, icmps, at_rs = exchange(lab, lab.sports + 3, last)
    assert len(icmps) == 1, [p.summary() for p in icmps]
    wire.assert_kernel_error(icmps[0], VIP, 64, 11, 0, last)
    assert [p.id for p in at_rs] == [1]
