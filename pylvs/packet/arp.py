"""ARP for the addresses the director owns: answer requests, announce with gratuitous ARP."""

from __future__ import annotations

import struct

from pylvs.packet.layout import ETHERTYPE_ARP, ETHERTYPE_IPV4

BROADCAST = b"\xff" * 6
_ARP = struct.Struct("!HHBBH6s4s6s4s")
ARP_LEN = _ARP.size  # 28
OP_REQUEST = 1
OP_REPLY = 2




def parse(payload: bytes | bytearray | memoryview) -> tuple[int, bytes, bytes, bytes, bytes] | None:
    """(op, sender MAC, sender IP, target MAC, target IP) of an Ethernet/IPv4 ARP packet, else None."""
    if len(payload) < ARP_LEN:
        return None
    htype, ptype, hlen, plen, op, sha, spa, tha, tpa = _ARP.unpack_from(payload, 0)
    if htype != 1 or ptype != ETHERTYPE_IPV4 or hlen != 6 or plen != 4:
        return None
    return op, sha, spa, tha, tpa


def frame(op: int, eth_dst: bytes, sha: bytes, spa: bytes, tha: bytes, tpa: bytes) -> bytes:
    """A complete Ethernet frame carrying one ARP packet (no virtio header)."""
    return (eth_dst + sha + struct.pack("!H", ETHERTYPE_ARP)
            + _ARP.pack(1, ETHERTYPE_IPV4, 6, 4, op, sha, spa, tha, tpa))


def reply(our_mac: bytes, our_ip: bytes, to_mac: bytes, to_ip: bytes) -> bytes:
    return frame(OP_REPLY, to_mac, our_mac, our_ip, to_mac, to_ip)


def gratuitous(our_mac: bytes, our_ip: bytes) -> bytes:
    """A gratuitous ARP request (sender = target = our IP), as `arping -U` sends it."""
    return frame(OP_REQUEST, BROADCAST, our_mac, our_ip, b"\0" * 6, our_ip)


def request(our_mac: bytes, our_ip: bytes, target_ip: bytes) -> bytes:
    return frame(OP_REQUEST, BROADCAST, our_mac, our_ip, b"\0" * 6, target_ip)
