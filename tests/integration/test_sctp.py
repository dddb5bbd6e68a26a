"""An SCTP service through NAT on the wire. The kernels of this lab may have no SCTP sockets, so the
association's first packets are built with scapy and injected at the client and the real server;
what crossed the director is captured at the other end and decoded, CRC32c included, by scapy."""

from __future__ import annotations

import re

from scapy.layers.inet import IP
from scapy.layers.sctp import SCTP, SCTPChunkInit, SCTPChunkInitAck

from pylvs.lab.inject import inject
from pylvs.lab.netns import Capture
from pylvs.lab.topology import CLIENT, VIP


def crc_ok(pkt) -> bool:
    fresh = IP(bytes(pkt[IP]))
    fresh[SCTP].chksum = None
    return IP(bytes(fresh))[SCTP].chksum == pkt[SCTP].chksum


def across(lab, sender: str, receiver: str, packet) -> IP:
    """`packet` injected at `sender`, as the one SCTP packet captured at `receiver`."""
    with Capture(lab.net, receiver, "eth0", "sctp", name=f"sctp-{receiver}") as capture:
        inject(lab.net, sender, [bytes(packet)], wait=0.2)
    (seen,) = [p for p in capture.packets() if SCTP in p]
    return seen


def test_sctp_association_is_scheduled_and_translated_both_ways(lab):
    rip = lab.rips[0]
    lab.lvsadm("-A", "--sctp-service", f"{VIP}:3868", "-s", "rr")
    lab.lvsadm("-a", "--sctp-service", f"{VIP}:3868", "-r", f"{rip}:3869", "-m")
    assert f"SCTP {VIP}:3868 rr" in lab.lvsadm("-L", "-n").stdout.replace("  ", " ")
    init = IP(src=CLIENT, dst=VIP) / SCTP(sport=40000, dport=3868) / SCTPChunkInit(
        init_tag=0x1234, a_rwnd=65535, n_out_streams=2, n_in_streams=2, init_tsn=100)
    seen = across(lab, "client", "rs1", init)
    assert (seen[IP].src, seen[IP].dst, seen[SCTP].sport, seen[SCTP].dport) == (CLIENT, rip, 40000, 3869)
    assert seen[SCTPChunkInit].init_tag == 0x1234 and crc_ok(seen)
    assert seen[IP].ttl == 63  # one hop: the director
    init_ack = IP(src=rip, dst=CLIENT) / SCTP(sport=3869, dport=40000, tag=0x1234) / SCTPChunkInitAck(
        init_tag=0x5678, a_rwnd=65535, n_out_streams=2, n_in_streams=2, init_tsn=500)
    back = across(lab, "rs1", "client", init_ack)
    assert (back[IP].src, back[IP].dst, back[SCTP].sport, back[SCTP].dport) == (VIP, CLIENT, 3868, 40000)
    assert back[SCTPChunkInitAck].init_tag == 0x5678 and crc_ok(back)
    conns = lab.lvsadm("-L", "-n", "-c").stdout
    assert re.search(rf"SCTP \S+ +C-SENT +{CLIENT}:40000 +{VIP}:3868 +{rip}:3869", conns), conns
