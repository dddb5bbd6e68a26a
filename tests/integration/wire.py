"""What the wire tests share (issue 18): scapy-built datagrams from the lab's client, the exchange
captured at the client and the real server, and the ICMP error the kernel's icmp_send makes."""

from __future__ import annotations

from scapy.layers.inet import ICMP, IP, UDP

from pylvs.lab.inject import inject
from pylvs.lab.netns import Capture


def datagram(client: str, vip: str, sport: int, size: int, ip_id: int, df: bool = False, ttl: int = 64) -> bytes:
    """An IPv4 packet of `size` bytes from the client's `sport` to vip:53, with its checksums.

    Each test uses its own source port: a connection outlives the service flushed after a test."""
    pkt = IP(src=client, dst=vip, id=ip_id, ttl=ttl, flags="DF" if df else 0) / UDP(sport=sport, dport=53)
    return bytes(pkt / (b"q" * (size - 28)))


def exchange(lab, client: str, vip: str, sport: int, packets: list[bytes], wait: float = 1.0,
             rs_sees: str | None = None):
    """Open the connection with a small datagram, then send `packets` from the client; (the answers
    the client got, the ICMP that reached it, the IP packets from the client (or `rs_sees`) at rs1)."""
    with Capture(lab.net, "client", "eth0", "icmp", name="wire-client") as at_client, \
            Capture(lab.net, "rs1", "eth0", "udp", name="wire-rs") as at_rs:
        first = datagram(client, vip, sport, 60, 1)
        answers = inject(lab.net, "client", [first, *packets], bind=f"{client}:{sport}", wait=wait)
    icmps = [p for p in at_client.packets() if ICMP in p and p[IP].dst == client]
    source = rs_sees or client
    return answers, icmps, [p[IP] for p in at_rs.packets() if IP in p and p[IP].src == source]


def routed(packet: bytes, ttl: int) -> bytes:
    """`packet` with the TTL the hops left it, header checksum updated."""
    ip = IP(packet)
    ip.ttl, ip.chksum = ttl, None
    return bytes(IP(bytes(ip)))


def assert_kernel_error(pkt, src: str, ttl: int, icmp_type: int, code: int, quoted: bytes, mtu: int = 0) -> None:
    """What icmp_send makes: from `src`, TOS 0xc0, TTL 64 (`ttl` after the hops back), no DF, the
    packet quoted (576 bytes in all; the capture may hold less)."""
    ip = pkt[IP]
    assert (ip.src, ip.tos, ip.ttl, int(ip.flags)) == (src, 0xC0, ttl, 0)
    assert (pkt[ICMP].type, pkt[ICMP].code) == (icmp_type, code)
    if mtu:
        assert pkt[ICMP].nexthopmtu == mtu
    quote = bytes(pkt[ICMP])[8:]
    assert len(quote) >= 28 and quote == quoted[:len(quote)]
    assert ip.len == 20 + 8 + min(len(quoted), 548)


def assert_fragments(at_rs, ip_id: int, dst: str, ttl: int) -> None:
    """A 2000-byte packet cut for a 1500-byte link as ip_fragment does: 1500 + 520, same ID, one TTL."""
    frags = [p for p in at_rs if p.id == ip_id]
    assert [(p.len, p.ttl, int(p.flags), p.frag * 8) for p in frags] == [(1500, ttl, 1, 0), (520, ttl, 0, 1480)]
    assert all(p.dst == dst for p in frags)
    for p in frags:
        head = IP(bytes(p)[:20])
        head.chksum = None
        assert IP(bytes(head)).chksum == p.chksum
