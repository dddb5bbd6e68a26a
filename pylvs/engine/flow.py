"""FlowEntry: the fixed-layout recipe for one direction of one connection (the engine's contract).

Every forwarding method expresses the per-packet work of an established flow as a FlowEntry: which
packets it matches (the key), how they are rewritten (addresses, ports, checksum deltas, TTL), where
they leave (egress interface, MACs, MTU) and how they are wrapped (tunnel). The Python data path
executes it in `forward/`; a second data path (the kernel fast path) executes the packed form,
`pack_key()`/`pack_value()`, whose layout is `KEY_FIELDS`/`VALUE_FIELDS` below and is mirrored field by
field in C by `pylvs/datapath/bpf/pylvs_flow.h` (tests/unit/test_flow_layout.py compiles the header and
compares every offset and size).

What a FlowEntry never covers, so that a second data path can only be faster, never different,
goes to the engine (the "punt rules", docs/design.md):
- any packet of a direction flagged ENGINE_ONLY;
- TCP segments with SYN (they may schedule anew), fragments, IP options, TTL/hop limit <= 1, packets
  longer than `mtu` (PMTU and fragmentation), ICMP, bad IP checksums.
FIN, RST and the ACKs of a closing connection are executed like data: a data path that executes an
entry also runs the IPVS TCP state machine on the entry's `tcp_state` and reports every change (an
EVENT, in order), which the engine applies to the connection (docs/design.md, "Kernel fast path").
Entries go to a data path once the connection is ESTABLISHED (TCP) or for UDP; the engine says when
with its connection events.

Addresses are carried in the packet's own byte form (4 bytes IPv4, 16 bytes IPv6); the packed
form stores 16 bytes, IPv4 as an IPv4-mapped IPv6 address (::ffff:a.b.c.d).
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING

from pylvs.ipvs_uapi import AF_INET, AF_INET6, Method

if TYPE_CHECKING:
    from pylvs.engine.forward.rewrite import Deltas
    from pylvs.engine.hops import Hop

# Directions
DIR_IN = 0   # client -> real server
DIR_OUT = 1  # real server -> client (NAT and FULLNAT replies)

# Flags (FLOW_F_* in pylvs_flow.h)
F_ENGINE_ONLY = 0x0001  # every packet of this direction goes to the engine
F_ENCAP_CSUM = 0x0002   # the tunnel carries a checksum (GUE UDP checksum, GRE C bit)
F_TOA = 0x0004          # FULLNAT IN: the kernel inserts TOA into the next client ACK (no SYN), then clears this

# Encapsulations (FLOW_ENCAP_* in pylvs_flow.h)
ENCAP_NONE, ENCAP_IPIP, ENCAP_GUE, ENCAP_GRE = 0, 1, 2, 3
ENCAP_BY_TUN_TYPE = {"ipip": ENCAP_IPIP, "gue": ENCAP_GUE, "gre": ENCAP_GRE}

# (name, struct code, C type) in order; natural alignment holds, so the C structs need no packing.
KEY_FIELDS: tuple[tuple[str, str, str], ...] = (
    ("family", "B", "__u8"),
    ("proto", "B", "__u8"),
    ("pad", "H", "__u16"),
    ("saddr", "16s", "__u8[16]"),
    ("daddr", "16s", "__u8[16]"),
    ("sport", "2s", "__be16"),
    ("dport", "2s", "__be16"),
)
VALUE_FIELDS: tuple[tuple[str, str, str], ...] = (
    ("method", "B", "__u8"),          # IP_VS_CONN_F_FWD_MASK value (Method)
    ("direction", "B", "__u8"),       # DIR_IN / DIR_OUT
    ("flags", "H", "__u16"),          # F_*
    ("new_family", "B", "__u8"),      # family after the rewrite (NAT64 differs)
    ("encap", "B", "__u8"),           # ENCAP_*
    ("mtu", "H", "__u16"),            # largest packet (IP total length) the egress link takes
    ("ifindex", "I", "__u32"),        # egress interface
    ("dmac", "6s", "__u8[6]"),
    ("smac", "6s", "__u8[6]"),
    ("new_saddr", "16s", "__u8[16]"),
    ("new_daddr", "16s", "__u8[16]"),
    ("new_sport", "2s", "__be16"),
    ("new_dport", "2s", "__be16"),
    ("csum_ip", "H", "__u16"),        # one's-complement delta for the IPv4 header checksum (TTL - 1 included)
    ("csum_l4", "H", "__u16"),        # delta for a complete TCP/UDP checksum (addresses and ports)
    ("csum_l4_partial", "H", "__u16"),  # delta for a CHECKSUM_PARTIAL field (pseudo-header only)
    ("encap_sport", "2s", "__be16"),  # GUE: outer UDP source port (a hash of the flow)
    ("encap_dport", "2s", "__be16"),  # GUE: outer UDP destination port
    ("tcp_state", "B", "__u8"),       # TCP: the connection's state as the entry last saw it (tcpstate)
    ("tcp_flags", "B", "__u8"),       # TCP: the flags of every segment the entry forwarded, or'ed
    ("outer_saddr", "16s", "__u8[16]"),
    ("outer_daddr", "16s", "__u8[16]"),
    ("seq_delta", "I", "__u32"),      # reserved: TCP sequence shift once a FULLNAT header was delivered
    ("transitions", "I", "__u32"),    # TCP state changes the kernel reported for this entry (EVENT)
    ("packets", "Q", "__u64"),        # counters, written by the data path that executes the entry
    ("bytes", "Q", "__u64"),
    ("last_seen_ns", "Q", "__u64"),   # monotonic (bpf_ktime_get_ns)
)
# A TCP state change the kernel made while executing an entry (struct pylvs_flow_event), in ring order.
EVENT_FIELDS: tuple[tuple[str, str, str], ...] = (
    ("ts_ns", "Q", "__u64"),          # monotonic (bpf_ktime_get_ns)
    ("key", "40s", "struct pylvs_flow_key"),
    ("tcp_flags", "B", "__u8"),       # the segment's TCP flags byte
    ("direction", "B", "__u8"),
    ("old_state", "B", "__u8"),
    ("new_state", "B", "__u8"),
    ("transitions", "I", "__u32"),
)
# The segment that ended a TCP connection in the kernel took its entries out (struct pylvs_flow_retired):
# their last counts by direction (DIR_IN, DIR_OUT), reported after the state change, in ring order.
RETIRED_FIELDS: tuple[tuple[str, str, str], ...] = (
    ("ts_ns", "Q", "__u64"),
    ("key", "40s", "struct pylvs_flow_key"),
    ("direction", "B", "__u8"),       # the entry whose segment ended it
    ("deleted", "B", "__u8"),         # bit (1 << direction): that direction's entry was taken out
    ("pad", "6s", "__u8[6]"),
    ("packets", "2Q", "__u64[2]"),    # by direction; 0 where not deleted
    ("bytes", "2Q", "__u64[2]"),
    ("last_seen_ns", "2Q", "__u64[2]"),
)
KEY = struct.Struct("=" + "".join(code for _, code, _ in KEY_FIELDS))
VALUE = struct.Struct("=" + "".join(code for _, code, _ in VALUE_FIELDS))
EVENT = struct.Struct("=" + "".join(code for _, code, _ in EVENT_FIELDS))
RETIRED = struct.Struct("=" + "".join(code for _, code, _ in RETIRED_FIELDS))
_V4_MAPPED = bytes(10) + b"\xff\xff"
_NO_ADDR = bytes(16)


def addr16(addr: bytes) -> bytes:
    """An address as the packed form stores it: IPv6 as is, IPv4 mapped."""
    return _V4_MAPPED + addr if len(addr) == 4 else addr


def family_of(addr: bytes) -> int:
    return AF_INET if len(addr) == 4 else AF_INET6


class FlowEntry:
    """One direction of one connection. `key`, `addrs` and `ports` are in packet byte order.

    key:   source address, destination address, source port, destination port of the packets matched
    addrs: their new source + destination addresses; ports: their new source + destination ports
    deltas: the checksum deltas of that rewrite (with TTL - 1); hop: where they leave (shared, live)
    """

    __slots__ = ("proto", "key", "method", "direction", "flags", "addrs", "ports", "deltas", "hop",
                 "encap", "outer_src", "outer_dst", "encap_sport", "encap_dport", "seq_delta",
                 "tcp_state", "packets", "bytes", "last_seen_ns")

    def __init__(self, proto: int, key: bytes, method: Method, direction: int, addrs: bytes, ports: bytes,
                 deltas: Deltas, hop: Hop | None = None, flags: int = 0) -> None:
        self.proto = proto
        self.key = key
        self.method = method
        self.direction = direction
        self.flags = flags
        self.addrs = addrs
        self.ports = ports
        self.deltas = deltas
        self.hop = hop
        self.encap = ENCAP_NONE
        self.outer_src = self.outer_dst = b""
        self.encap_sport = self.encap_dport = 0
        self.seq_delta = 0
        self.tcp_state = 0  # TCP: the connection's state when the entry goes to the kernel
        self.packets = self.bytes = self.last_seen_ns = 0

    @property
    def alen(self) -> int:
        return (len(self.key) - 4) // 2

    @property
    def family(self) -> int:
        return AF_INET if self.alen == 4 else AF_INET6

    @property
    def offloadable(self) -> bool:
        return not self.flags & F_ENGINE_ONLY and self.hop is not None

    def pack_key(self) -> bytes:
        n = self.alen
        k = self.key
        return KEY.pack(self.family, self.proto, 0, addr16(k[:n]), addr16(k[n:2 * n]), k[2 * n:2 * n + 2],
                        k[2 * n + 2:2 * n + 4])

    def pack_value(self) -> bytes:
        n = len(self.addrs) // 2
        hop = self.hop
        ifindex, eth, mtu = (hop.ifindex, hop.eth, hop.mtu) if hop is not None else (0, bytes(12), 0)
        d = self.deltas
        return VALUE.pack(
            int(self.method), self.direction, self.flags, family_of(self.addrs[:n]), self.encap, mtu, ifindex,
            eth[:6], eth[6:], addr16(self.addrs[:n]), addr16(self.addrs[n:]), self.ports[:2], self.ports[2:],
            d.ip, d.l4, d.l4_partial, self.encap_sport.to_bytes(2, "big"), self.encap_dport.to_bytes(2, "big"),
            self.tcp_state, 0, addr16(self.outer_src) if self.outer_src else _NO_ADDR,
            addr16(self.outer_dst) if self.outer_dst else _NO_ADDR,
            self.seq_delta, 0, self.packets, self.bytes, self.last_seen_ns)

    def __repr__(self) -> str:
        return (f"FlowEntry({Method(self.method).name} dir={self.direction} key={self.key.hex()} "
                f"-> {self.addrs.hex()}:{self.ports.hex()} flags={self.flags:#x})")
