"""Direct routing on the wire, packet by packet as the kernel's IPVS answers (issue 18): a jumbo-frame
path from the client through the router to the director's second arm (MTU 9000), real servers on
a 1500-byte LAN. Frames are built with scapy and sent from the client's namespace; what arrives at
the client and the real server is read back with scapy. The router decrements the TTL once on the
way in (the director sees 63) and once on the way back."""

from __future__ import annotations

import functools

import pytest
from scapy.layers.inet import IPerror, UDPerror

from pylvs.lab import servers
from pylvs.lab.topologies_dr_tun import CLIENT, VIP, DrLab
from tests.integration import wire
from tests.integration.labs import flushed, shared_lab

RIP = "192.0.2.11"
datagram = functools.partial(wire.datagram, CLIENT, VIP)
exchange = functools.partial(wire.exchange, client=CLIENT, vip=VIP)


@pytest.fixture(scope="module")
def jumbo_lab():
    lab = DrLab(n_rs=1, client_mtu=9000)
    for built in shared_lab(lab):
        servers.start_udp(lab.net, "rs1", VIP, 53, "rs1")  # DR: the real server answers from the VIP
        yield built


@pytest.fixture
def lab(jumbo_lab):
    # A fragmentation needed from an earlier test left the client a path MTU of 1500 to the VIP.
    jumbo_lab.net.ip("client", "route", "flush", "cache")
    jumbo_lab.lvsadm("-A", "-u", f"{VIP}:53", "-s", "rr")
    jumbo_lab.lvsadm("-a", "-u", f"{VIP}:53", "-r", RIP, "-g")
    yield from flushed(jumbo_lab)


def test_too_big_with_df_gets_fragmentation_needed_quoting_the_ttl_after_the_director(lab):
    big = datagram(40001, 2000, 1111, df=True)
    answers, icmps, at_rs = exchange(lab, sport=40001, packets=[big])
    assert len(answers) == 1 and answers[0].startswith(b"rs1 ")
    assert len(icmps) == 1, [p.summary() for p in icmps]
    wire.assert_kernel_error(icmps[0], VIP, 63, 3, 4, wire.routed(big, 62), mtu=1500)  # router 63, director 62
    assert icmps[0][IPerror].dst == VIP and icmps[0][UDPerror].dport == 53
    assert [p.id for p in at_rs] == [1]


def test_too_big_without_df_arrives_as_two_fragments_and_is_answered(lab):
    answers, icmps, at_rs = exchange(lab, sport=40002, packets=[datagram(40002, 2000, 2222)])
    wire.assert_fragments(at_rs, 2222, VIP, 62)
    assert len(answers) == 2 and answers[1].startswith(b"rs1 ") and answers[1].endswith(b"q" * 64)
    assert icmps == []


def test_ttl_one_at_the_director_gets_time_exceeded_from_the_vip(lab):
    last = datagram(40003, 100, 3333, ttl=2)  # 1 when it reaches the director
    answers, icmps, at_rs = exchange(lab, sport=40003, packets=[last])
    assert len(icmps) == 1, [p.summary() for p in icmps]
    wire.assert_kernel_error(icmps[0], VIP, 63, 11, 0, wire.routed(last, 1))
    assert [p.id for p in at_rs] == [1]
