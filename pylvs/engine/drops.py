"""Why the engine dropped a frame: every reason, declared once with what it means.

`Engine.drops` counts by these names; lvsadm, the control protocol and (later) metrics read them from
here, so a reason cannot be renamed or invented in one place and missed in another.
"""

from __future__ import annotations

from collections import Counter

REASONS: dict[str, str] = {
    "runt": "frame shorter than an Ethernet header",
    "malformed": "IPv4/TCP/UDP/ICMP header inconsistent with the frame",
    "bad_ip_checksum": "IPv4 header checksum wrong",
    "bad_partial_checksum": "CHECKSUM_PARTIAL offsets that do not fit the packet",
    "fragment": "IP fragment (not reassembled)",
    "unknown_protocol": "to a VIP with a protocol other than TCP, UDP or ICMP",
    "no_service": "to a VIP port without a virtual service",
    "no_conn": "TCP segment other than a SYN (SCTP: packet not starting with INIT) for an unknown connection",
    "no_dest": "no real server available (answered with ICMP port unreachable)",
    "pe_no_callid": "new datagram to a --pe sip service without a usable SIP Call-ID (as IPVS drops it)",
    "new_conn_budget": "a new connection beyond the round's budget (a flood: established flows go first)",
    "dest_unavailable": "connection whose real server was removed (expire_nodest_conn off)",
    "no_local_address": "FULLNAT service without local addresses",
    "no_local_port": "FULLNAT local ports exhausted",
    "ttl_exceeded": "TTL ran out at the director",
    "frag_needed": "DF packet too big for the egress link (answered with fragmentation needed)",
    "icmp_rate_limited": "ICMP error not sent: over its destination's rate (icmp_ratelimit, as the kernel)",
    "neighbour_queue_full": "too many frames waiting for one neighbour",
    "no_neighbour": "neighbour not resolved in time",
    "tunnel_no_port": "GUE real server without a port",
    "tunnel_no_source": "no address on the tunnel's egress interface",
    "tunnel_mtu": "egress MTU too small for the tunnel overhead",
    "gso_unsupported": "GSO type the software segmentation does not handle",
    "icmp_unrelated": "ICMP to a VIP that is neither echo request nor an error",
    "icmp_no_conn": "ICMP error about no known connection",
    "icmp_unsupported": "ICMP error about a connection whose method does not translate it",
    "icmp_untranslatable": "ICMP(v6) error whose type has no counterpart in the other family (RFC 7915)",
    "packet_too_big": "IPv6 packet too big for the egress link (answered with Packet Too Big)",
    "method_unsupported": "IPv6 connection to a real server whose forwarding method has no IPv6 path yet",
    "icmp_tunnel_no_df": "fragmentation needed about a tunnelled packet the client may fragment",
    "synproxy_bad_cookie": "ACK to a SYN-proxy service whose SYN cookie is wrong or too old",
    "synproxy_setup": "client segment (or a SYN) beyond what the SYN proxy holds while the real server has not "
                      "answered, or an unexpected reply then",
    "synproxy_no_replies": "SYN-proxy connection scheduled to a DR/TUN real server (its replies bypass the director)",
    "max_conns": "new connection refused: the table holds --max-conns entries",
    "drop_packet": "new connection dropped by the drop_packet defence (memory short, or mode 3)",
}


class Drops(Counter):
    """A Counter that refuses undeclared reasons (a typo would otherwise count silently)."""

    def __missing__(self, reason: str) -> int:
        if reason not in REASONS:
            raise KeyError(f"undeclared drop reason {reason!r}: add it to pylvs.engine.drops.REASONS")
        return 0
