"""The sockets the userspace decapsulator opens: tunnelled packets with their offload state.

- A link-level socket (AF_PACKET on every interface; SOCK_RAW, as PACKET_VNET_HDR requires) with
  PACKET_VNET_HDR: each packet comes with the kernel's virtio_net_hdr, which says whether its
  checksum is still partial and whether it is a GSO super-frame (offload.py). A classic BPF filter
  keeps only packets addressed to this host's link address, of the tunnel's protocol (and the GUE
  port). The socket is alone in a fanout group with PACKET_FANOUT_FLAG_DEFRAG, so the kernel
  reassembles outer fragments for it (in a queue of its own) before the filter sees them.
- The protocol socket (raw IPPROTO_IPIP/GRE, or UDP bound to the GUE port) is what makes the kernel
  deliver these packets quietly instead of answering protocol/port unreachable. Its copies are not
  needed: a raw socket drops them in its filter; the UDP socket's are read and discarded (a filter
  would count every GUE packet in the host's UDP InErrors).
"""

from __future__ import annotations

import ctypes
import os
import socket
import struct

from pylvs.io.afpacket import ETH_P_IP, PACKET_IGNORE_OUTGOING, PACKET_VNET_HDR, SO_ATTACH_FILTER, SOL_PACKET
from pylvs.packet.vnet import VNET_HDR_LEN

PACKET_HOST = 0
SO_RCVBUFFORCE = 33
PACKET_FANOUT = 18
PACKET_FANOUT_HASH = 0
PACKET_FANOUT_FLAG_DEFRAG = 0x8000
SKF_AD_PKTTYPE = 0xFFFFF000 + 4  # classic BPF ancillary load of skb->pkt_type
SKF_NET_OFF = 0xFFF00000         # classic BPF loads relative to the network header (-0x100000)
ARPHRD_ETHER, ARPHRD_LOOPBACK, ARPHRD_NONE = 1, 772, 0xFFFE
LINK_HEADER = {ARPHRD_ETHER: 14, ARPHRD_LOOPBACK: 14, ARPHRD_NONE: 0}  # bytes before the IP header
MAX_PACKET = 256 * 1024          # a GSO super-frame (BIG TCP may exceed 64 KB) with its vnet header
RCVBUF = 8 << 20

# Classic BPF opcodes (linux/filter.h) for the filter below.
LD_W_ABS, LD_H_ABS, LD_B_ABS, LDX_MSH, LD_H_IND = 0x20, 0x28, 0x30, 0xB1, 0x48
JEQ_K, JSET_K, RET_K = 0x15, 0x45, 0x06


def tunnel_filter(proto: int, udp_port: int = 0) -> list[tuple[int, int, int, int]]:
    """A classic BPF program that accepts, whole, unfragmented (or reassembled) IPv4 packets of
    `proto` sent to this host's link address (and to `udp_port` for UDP). It reads the IP header
    wherever the link header leaves it (SKF_NET_OFF)."""
    accept, drop = (RET_K, 0, 0, 0x40000), (RET_K, 0, 0, 0)
    tail = [accept, drop]
    port = []
    if udp_port:
        port = [(LDX_MSH, 0, 0, SKF_NET_OFF),       # x = IP header length
                (LD_H_IND, 0, 0, SKF_NET_OFF + 2),  # UDP destination port
                (JEQ_K, 0, 1, udp_port)]            # -> accept : drop
    checks = [
        (LD_W_ABS, 0, 0, SKF_AD_PKTTYPE),
        (JEQ_K, 0, None, PACKET_HOST),
        (LD_B_ABS, 0, 0, SKF_NET_OFF + 9),          # protocol
        (JEQ_K, 0, None, proto),
        (LD_H_ABS, 0, 0, SKF_NET_OFF + 6),          # flags and fragment offset
        (JSET_K, None, 0, 0x3FFF),                  # MF or an offset: a fragment
    ]
    program = checks + port + tail
    drop_at = len(program) - 1
    resolved = []
    for i, (code, jt, jf, k) in enumerate(program):
        to_drop = drop_at - i - 1
        resolved.append((code, to_drop if jt is None else jt, to_drop if jf is None else jf, k))
    return resolved


def attach_filter(sock: socket.socket, program: list[tuple[int, int, int, int]]) -> None:
    code = ctypes.create_string_buffer(b"".join(struct.pack("HBBI", *ins) for ins in program))
    fprog = struct.pack("HL", len(program), ctypes.addressof(code))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)  # the kernel copies the program


def set_rcvbuf(sock: socket.socket, size: int = RCVBUF) -> None:
    """A receive buffer that holds bursts of 64 KB frames (beyond rmem_max when we may)."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, size)
    except PermissionError:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)


def open_link_socket(proto: int, udp_port: int = 0) -> socket.socket:
    """The AF_PACKET socket for the tunnel's packets on every interface, each after its vnet header.

    It receives from creation on, before the filter is attached: the first packets may be anything
    (fragments too), which is why the decapsulator checks every packet as if there were no filter."""
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_IP))
    try:
        attach_filter(sock, tunnel_filter(proto, udp_port))
        sock.setsockopt(SOL_PACKET, PACKET_VNET_HDR, 1)
        sock.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
        set_rcvbuf(sock)
        join_defrag_fanout(sock)
    except BaseException:
        sock.close()
        raise
    sock.setblocking(False)
    return sock


def join_defrag_fanout(sock: socket.socket) -> None:
    """Make `sock` the only member of a fanout group that reassembles IPv4 fragments.

    Group ids are per network namespace; one taken by someone else's group refuses us."""
    first = os.getpid() & 0xFFFF
    for step in range(64):
        group = (first + step) & 0xFFFF
        try:
            arg = group | (PACKET_FANOUT_HASH | PACKET_FANOUT_FLAG_DEFRAG) << 16  # beyond a C int: as bytes
            sock.setsockopt(SOL_PACKET, PACKET_FANOUT, struct.pack("I", arg))
            return
        except OSError as exc:
            last = exc
    raise last


def open_protocol_socket(kind: str, port: int = 0) -> socket.socket:
    """The raw (ipip, gre) socket, which drops what it takes, or the UDP (gue) socket."""
    if kind == "gue":
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("0.0.0.0", port))
    else:
        sock = socket.socket(socket.AF_INET, socket.SOCK_RAW,
                             socket.IPPROTO_IPIP if kind == "ipip" else socket.IPPROTO_GRE)
    try:
        if kind == "gue":
            set_rcvbuf(sock, 1 << 20)
        else:
            attach_filter(sock, [(RET_K, 0, 0, 0)])  # the kernel found a taker: enough
    except BaseException:
        sock.close()
        raise
    sock.setblocking(False)
    return sock


def link_header_len(hatype: int, frame: memoryview) -> int:
    """Where the IP header starts in a frame from the link-level socket (-1: a link we do not read,
    or an Ethernet frame that does not carry IPv4 right after its header, such as a VLAN tag)."""
    n = LINK_HEADER.get(hatype, -1)
    if n == 14 and (len(frame) < 14 or frame[12] != 0x08 or frame[13] != 0x00):
        return -1
    return n


__all__ = ["VNET_HDR_LEN", "MAX_PACKET", "PACKET_HOST", "link_header_len", "open_link_socket",
           "open_protocol_socket", "tunnel_filter"]
