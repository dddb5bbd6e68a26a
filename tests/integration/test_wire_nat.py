"""NAT on the wire, packet by packet as the kernel's IPVS answers (issue 18): a jumbo-frame client
(link MTU 9000) and real servers on a 1500-byte LAN. Frames are built with scapy, sent from the
client's namespace, and what arrives at the client and the real server is read back with scapy."""

from __future__ import annotations

import pytest
from scapy.layers.inet import ICMP, IP, UDP, IPerror, UDPerror

from pylvs.lab.inject import inject
from pylvs.lab.netns import Capture
from pylvs.lab.topology import CLIENT, VIP, NatLab, rip
from tests.integration.labs import flushed, shared_lab

RIP = rip(1)


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


def datagram(sport: int, size: int, ip_id: int, df: bool = False, ttl: int = 64) -> bytes:
    """An IPv4 packet of `size` bytes from the client's `sport` to VIP:53, with its checksums.

    Each test uses its own source port: a connection outlives the service flushed after a test."""
    pkt = IP(src=CLIENT, dst=VIP, id=ip_id, ttl=ttl, flags="DF" if df else 0) / UDP(sport=sport, dport=53)
    return bytes(pkt / (b"q" * (size - 28)))


def exchange(lab, sport: int, *packets: bytes, wait: float = 1.0):
    """Open the connection with a small datagram, then send `packets`; (answers, client ICMP, real server IP)."""
    with Capture(lab.net, "client", "eth0", "icmp", name="wire-client") as at_client, \
            Capture(lab.net, "rs1", "eth0", "udp", name="wire-rs") as at_rs:
        answers = inject(lab.net, "client", [datagram(sport, 60, 1), *packets], bind=f"{CLIENT}:{sport}", wait=wait)
    icmps = [p for p in at_client.packets() if ICMP in p and p[IP].dst == CLIENT]
    return answers, icmps, [p[IP] for p in at_rs.packets() if IP in p and p[IP].src == CLIENT]


def assert_kernel_error(pkt, icmp_type: int, code: int, quoted: bytes, mtu: int = 0) -> None:
    """What icmp_send makes: from the VIP, TOS 0xc0, TTL 64, no DF, the packet quoted (capture-truncated)."""
    ip = pkt[IP]
    assert (ip.src, ip.tos, ip.ttl, int(ip.flags)) == (VIP, 0xC0, 64, 0)
    assert (pkt[ICMP].type, pkt[ICMP].code) == (icmp_type, code)
    if mtu:
        assert pkt[ICMP].nexthopmtu == mtu
    quote = bytes(pkt[ICMP])[8:]
    assert len(quote) >= 28 and quote == quoted[:len(quote)]
    assert ip.len == 20 + 8 + min(len(quoted), 548)


def test_too_big_with_df_gets_fragmentation_needed_with_the_real_server_links_mtu(lab):
    big = datagram(40001, 2000, 1111, df=True)
    answers, icmps, at_rs = exchange(lab, 40001, big)
    assert len(answers) == 1 and answers[0].startswith(b"rs1 ")  # the small one went through
    assert len(icmps) == 1, [p.summary() for p in icmps]
    quoted = IP(big)
    quoted.ttl, quoted.chksum = 63, None  # the kernel decrements the TTL before the MTU check
    assert_kernel_error(icmps[0], 3, 4, bytes(IP(bytes(quoted))), mtu=1500)
    assert icmps[0][IPerror].dst == VIP and icmps[0][UDPerror].dport == 53
    assert [p.id for p in at_rs] == [1]  # nothing of the big one reached the real server


def test_too_big_without_df_arrives_as_two_fragments_and_is_answered(lab):
    answers, icmps, at_rs = exchange(lab, 40002, datagram(40002, 2000, 2222))
    frags = [p for p in at_rs if p.id == 2222]
    assert [(p.len, p.ttl, int(p.flags), p.frag * 8) for p in frags] == [(1500, 63, 1, 0), (520, 63, 0, 1480)]
    assert all(p.dst == RIP for p in frags)
    for p in frags:
        head = IP(bytes(p)[:20])
        head.chksum = None
        assert IP(bytes(head)).chksum == p.chksum
    assert len(answers) == 2 and all(a.startswith(b"rs1 ") for a in answers)  # reassembled and answered
    assert answers[1].endswith(b"q" * 64)
    assert icmps == []


def test_ttl_one_gets_time_exceeded_from_the_vip(lab):
    last = datagram(40003, 100, 3333, ttl=1)
    answers, icmps, at_rs = exchange(lab, 40003, last)
    assert len(icmps) == 1, [p.summary() for p in icmps]
    assert_kernel_error(icmps[0], 11, 0, last)
    assert [p.id for p in at_rs] == [1]
