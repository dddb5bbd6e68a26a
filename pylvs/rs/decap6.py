"""Userspace decapsulation of IPv6-in-IPv6 (RFC 2473, next header 41), IPv6 in GRE over IPv6 (next header
47, protocol 0x86DD) and in GUE over IPv6 (UDP to the GUE port, proto_ctype 41): what the director sends
for an IPv6 virtual service with a tunnelled real server (`-i`), for hosts whose kernel has no
ip6_tunnel / ip6_gre / fou6.

As decap.py does for IPv4: a link-level socket (ETH_P_IPV6, a classic BPF filter keeping packets to
this host's link address with next header 41) reads the tunnel packets with their offload state; a raw
IPPROTO_IPV6 socket makes the kernel take them quietly (no ICMPv6 parameter problem for an unknown
next header). The inner packet, if addressed to one of our IPv6 VIPs, is written to the TUN device.
Outer extension headers and fragments are not taken (the director sends neither).
"""

from __future__ import annotations

import socket

from pylvs.io.afpacket import ETH_P_IPV6, PACKET_IGNORE_OUTGOING, PACKET_VNET_HDR, SOL_PACKET
from pylvs.packet import checksum, vnet
from pylvs.rs import capture, decap, offload

NH_IPV6 = 41
NH_GRE = 47
NH_UDP = 17
NEXT_HEADER = {"ipip": NH_IPV6, "gre": NH_GRE, "gue": NH_UDP}
HDR = 40
ETH_P_IPV6_GRE = 0x86DD
_ETH_IPV6 = b"\x86\xdd"


def tunnel6_filter(nh: int = NH_IPV6, udp_port: int = 0) -> list[tuple[int, int, int, int]]:
    """Accept IPv6 packets to this host's link address whose next header is `nh` (and for UDP, to
    `udp_port`: the UDP header right after the 40-byte IPv6 header)."""
    port = [(capture.LD_H_ABS, 0, 0, capture.SKF_NET_OFF + HDR + 2), (capture.JEQ_K, 0, 1, udp_port)] \
        if udp_port else []
    program = [
        (capture.LD_W_ABS, 0, 0, capture.SKF_AD_PKTTYPE),
        (capture.JEQ_K, 0, None, capture.PACKET_HOST),
        (capture.LD_B_ABS, 0, 0, capture.SKF_NET_OFF + 6),  # next header
        (capture.JEQ_K, 0, None, nh),
        *port,
        (capture.RET_K, 0, 0, 0x40000),
        (capture.RET_K, 0, 0, 0),
    ]
    drop = len(program) - 1
    return [(code, jt, drop - i - 1 if jf is None else jf, k) for i, (code, jt, jf, k) in enumerate(program)]


def open_link_socket6(kind: str = "ipip", port: int = 0) -> socket.socket:
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_IPV6))
    try:
        capture.attach_filter(sock, tunnel6_filter(NEXT_HEADER[kind], port if kind == "gue" else 0))
        sock.setsockopt(SOL_PACKET, PACKET_VNET_HDR, 1)
        sock.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
        capture.set_rcvbuf(sock)
    except BaseException:
        sock.close()
        raise
    sock.setblocking(False)
    return sock


def open_protocol_socket6(kind: str = "ipip", port: int = 0) -> socket.socket:
    """A raw socket for the tunnel's next header that drops what it takes (the kernel found a taker), or
    for GUE a UDP socket bound to the port (IPv6 only: the IPv4 one has the port too)."""
    if kind == "gue":
        sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    else:
        sock = socket.socket(socket.AF_INET6, socket.SOCK_RAW, NEXT_HEADER[kind])
    try:
        if kind == "gue":
            sock.bind(("::", port))
        else:
            capture.attach_filter(sock, [(capture.RET_K, 0, 0, 0)])
    except BaseException:
        sock.close()
        raise
    sock.setblocking(False)
    return sock


def from_link6(frame: memoryview, hatype: int, vips: set[bytes], local, kind: str = "ipip",
               port: int = 0) -> tuple[bytes | None, memoryview | None, str]:
    """(virtio_net_hdr, inner packet, "") to write to the TUN device for a frame of the IPv6 link-level
    socket, or (None, None, why not)."""
    link = capture.LINK_HEADER.get(hatype, -1)
    body = frame[vnet.VNET_HDR_LEN:]
    if link < 0 or (link == 14 and (len(body) < 14 or body[12:14] != _ETH_IPV6)):
        return None, None, "not_ours"
    packet = body[link:]
    if len(packet) < 2 * HDR or packet[0] >> 4 != 6 or packet[6] != NEXT_HEADER[kind]:
        return None, None, "malformed" if len(packet) < 2 * HDR else "other_protocol"
    end = HDR + (packet[4] << 8 | packet[5])
    if end > len(packet):
        return None, None, "malformed"
    if bytes(packet[24:40]) not in local:
        return None, None, "not_local"
    flags = vnet.unpack(frame)[0]
    start = HDR
    if kind == "gre":
        off, why = decap.gre_offset(packet[HDR:end], not flags & vnet.F_NEEDS_CSUM, ETH_P_IPV6_GRE)
        if off < 0:
            return None, None, why
        start += off
    elif kind == "gue":
        off, why = _gue(packet, end, port, not flags & vnet.F_NEEDS_CSUM)
        if off < 0:
            return None, None, why
        start += off
    inner = packet[start:end]
    if len(inner) < HDR:
        return None, None, "malformed"
    if inner[0] >> 4 != 6 or HDR + (inner[4] << 8 | inner[5]) != len(inner):
        return None, None, "malformed"
    if bytes(inner[24:40]) not in vips:
        return None, None, "not_vip"
    header, why = offload.inner_header(vnet.unpack(frame), link + start, inner)  # partial checksums, GSO
    return (header, inner, "") if header is not None else (None, None, why)



def _gue(packet: memoryview, end: int, port: int, verify: bool) -> tuple[int, str]:
    """Where the inner packet starts after the outer IPv6 header, in UDP to `port` and GUE, or (-1, why)."""
    udp = packet[HDR:end]
    if len(udp) < 8 or (udp[2] << 8 | udp[3]) != port:
        return -1, "other_port"
    length = udp[4] << 8 | udp[5]
    if length < 8 or length > len(udp):
        return -1, "malformed"
    if verify:  # IPv6 UDP checksums are mandatory (RFC 8200 §8.1)
        pseudo = checksum.ones_sum(bytes(packet[8:40]) + length.to_bytes(4, "big") + b"\0\0\0\x11")
        if checksum.fold(checksum.ones_sum(udp[:length]) + pseudo) != 0xFFFF:
            return -1, "bad_checksum"
    off, why = decap.gue_offset(udp[8:length], 6)
    return (8 + off, "") if off >= 0 else (-1, why)
