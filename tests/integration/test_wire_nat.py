"""NAT on the wire, packet by packet as the kernel's IPVS answers (issue 18): a jumbo-frame client
(link MTU 9000) and real servers on a 1500-byte LAN. Frames are built with scapy, sent from the
client's namespace, and what arrives at the client and the real server is read back with scapy."""

from __future__ import annotations

import functools

import pytest
from scapy.layers.inet import IPerror, UDPerror

from pylvs.lab.topology import CLIENT, VIP, NatLab, rip
from tests.integration import wire
from tests.integration.labs import flushed, shared_lab

RIP = rip(1)
datagram = functools.partial(wire.datagram, CLIENT, VIP)
exchange = functools.partial(wire.exchange, client=CLIENT, vip=VIP)


@pytest.fixture(scope="module")
def jumbo_lab():
    yield from shared_lab(NatLab(client_mtu=9000, n_rs=1))


@pytest.fixture
def lab(jumbo_lab):
    # A fragmentation needed from an earlier test left the client a path MTU of 1500 to the VIP.
    jumbo_lab.net.ip("client", "route", "flush", "cache")
    jumbo_lab.lvsadm("-A", "-u", f"{VIP}:53", "-s", "rr")
    jumbo_lab.lvsadm("-a", "-u", f"{VIP}:53", "-r", f"{RIP}:{jumbo_lab.udp_port}", "-m")
    yield from flushed(jumbo_lab)


def test_too_big_with_df_gets_fragmentation_needed_with_the_real_server_links_mtu(lab):
    big = datagram(40001, 2000, 1111, df=True)
    answers, icmps, at_rs = exchange(lab, sport=40001, packets=[big])
    assert len(answers) == 1 and answers[0].startswith(b"rs1 ")  # the small one went through
    assert len(icmps) == 1, [p.summary() for p in icmps]
    # The kernel decrements the TTL before the MTU check, and rewrites the addresses after it.
    wire.assert_kernel_error(icmps[0], VIP, 64, 3, 4, wire.routed(big, 63), mtu=1500)
    assert icmps[0][IPerror].dst == VIP and icmps[0][UDPerror].dport == 53
    assert [p.id for p in at_rs] == [1]  # nothing of the big one reached the real server


def test_too_big_without_df_arrives_as_two_fragments_and_is_answered(lab):
    answers, icmps, at_rs = exchange(lab, sport=40002, packets=[datagram(40002, 2000, 2222)])
    wire.assert_fragments(at_rs, 2222, RIP, 63)
    assert len(answers) == 2 and all(a.startswith(b"rs1 ") for a in answers)  # reassembled and answered
    assert answers[1].endswith(b"q" * 64)
    assert icmps == []


def test_ttl_one_gets_time_exceeded_from_the_vip(lab):
    last = datagram(40003, 100, 3333, ttl=1)
    answers, icmps, at_rs = exchange(lab, sport=40003, packets=[last])
    assert len(icmps) == 1, [p.summary() for p in icmps]
    wire.assert_kernel_error(icmps[0], VIP, 64, 11, 0, last)
    assert [p.id for p in at_rs] == [1]
