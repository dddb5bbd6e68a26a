"""Direct routing on the wire, packet by packet as the kernel's IPVS answers (issue 18): a jumbo-frame
path from the client through the router to the director's second arm (MTU 9000), real servers on
a 1500-byte LAN. Frames are built with scapy and sent from the client's namespace; what arrives at
the client and the real server is read back with scapy. The router decrements the TTL once on the
way in (the director sees 63) and once on the way back."""

from __future__ import annotations

import pytest
from scapy.layers.inet import ICMP, IP, UDP, IPerror, UDPerror

from pylvs.lab import servers
from pylvs.lab.inject import inject
from pylvs.lab.netns import Capture
from pylvs.lab.topologies_dr_tun import CLIENT, VIP, DrLab
from tests.integration.labs import flushed, shared_lab

RIP = "192.0.2.11"


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


def datagram(sport: int, size: int, ip_id: int, df: bool = False, ttl: int = 64) -> bytes:
    """An IPv4 packet of `size` bytes from the client's `sport` to VIP:53 (a port per test: a connection
    outlives the service flushed after a test)."""
    pkt = IP(src=CLIENT, dst=VIP, id=ip_id, ttl=ttl, flags="DF" if df else 0) / UDP(sport=sport, dport=53)
    return bytes(pkt / (b"q" * (size - 28)))


def exchange(lab, sport: int, *packets: bytes, wait: float = 1.0):
    """Open the connection with a small datagram, then send `packets`; (answers, client ICMP, real server IP)."""
    with Capture(lab.net, "client", "eth0", "icmp", name="wire-client") as at_client, \
            Capture(lab.net, "rs1", "eth0", "udp", name="wire-rs") as at_rs:
        answers = inject(lab.net, "client", [datagram(sport, 60, 1), *packets], bind=f"{CLIENT}:{sport}", wait=wait)
    icmps = [p for p in at_client.packets() if ICMP in p and p[IP].dst == CLIENT]
    return answers, icmps, [p[IP] for p in at_rs.packets() if IP in p and p[IP].src == CLIENT]


def routed(packet: bytes, ttl: int) -> bytes:
    """`packet` as it is after the hops that left it `ttl`, header checksum updated."""
    ip = IP(packet)
    ip.ttl, ip.chksum = ttl, None
    return bytes(IP(bytes(ip)))


def assert_kernel_error(pkt, icmp_type: int, code: int, quoted: bytes, mtu: int = 0) -> None:
    """What icmp_send makes: from the VIP, TOS 0xc0, TTL 64 (63 after the router), no DF, the packet quoted."""
    ip = pkt[IP]
    assert (ip.src, ip.tos, ip.ttl, int(ip.flags)) == (VIP, 0xC0, 63, 0)
    assert (pkt[ICMP].type, pkt[ICMP].code) == (icmp_type, code)
    if mtu:
        assert pkt[ICMP].nexthopmtu == mtu
    quote = bytes(pkt[ICMP])[8:]
    assert len(quote) >= 28 and quote == quoted[:len(quote)]
    assert ip.len == 20 + 8 + min(len(quoted), 548)


def test_too_big_with_df_gets_fragmentation_needed_quoting_the_ttl_after_the_director(lab):
    big = datagram(40001, 2000, 1111, df=True)
    answers, icmps, at_rs = exchange(lab, 40001, big)
    assert len(answers) == 1 and answers[0].startswith(b"rs1 ")
    assert len(icmps) == 1, [p.summary() for p in icmps]
    assert_kernel_error(icmps[0], 3, 4, routed(big, 62), mtu=1500)  # router 63, director 62
    assert icmps[0][IPerror].dst == VIP and icmps[0][UDPerror].dport == 53
    assert [p.id for p in at_rs] == [1]


def test_too_big_without_df_arrives_as_two_fragments_and_is_answered(lab):
    answers, icmps, at_rs = exchange(lab, 40002, datagram(40002, 2000, 2222))
    frags = [p for p in at_rs if p.id == 2222]
    assert [(p.len, p.ttl, int(p.flags), p.frag * 8) for p in frags] == [(1500, 62, 1, 0), (520, 62, 0, 1480)]
    assert all(p.dst == VIP for p in frags)
    for p in frags:
        head = IP(bytes(p)[:20])
        head.chksum = None
        assert IP(bytes(head)).chksum == p.chksum
    assert len(answers) == 2 and answers[1].startswith(b"rs1 ") and answers[1].endswith(b"q" * 64)
    assert icmps == []


def test_ttl_one_at_the_director_gets_time_exceeded_from_the_vip(lab):
    last = datagram(40003, 100, 3333, ttl=2)  # 1 when it reaches the director
    answers, icmps, at_rs = exchange(lab, 40003, last)
    assert len(icmps) == 1, [p.summary() for p in icmps]
    assert_kernel_error(icmps[0], 11, 0, routed(last, 1))
    assert [p.id for p in at_rs] == [1]
