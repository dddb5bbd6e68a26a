"""NAT46 through FULLNAT: IPv4 clients of an IPv4 virtual service reach IPv6 real servers from an IPv6
local address (DPVS offers it beside NAT64), the headers translated as RFC 7915 says (§4.1 IPv4 -> IPv6
for requests, §5.1 IPv6 -> IPv4 for replies).

NAT64 mirrored: the same FULLNAT binding (an IPv6 local address and port from the service's pool: the
pool of the real server's family), the same client-address delivery and the same translation
(forward/translate.py), the directions swapped. The client's address reaches the server as it is,
IPv4: in a PROXY protocol v2 header (TCP4, as DPVS sends it) or the 8-byte TOA option. The request key
is IPv4 (12 bytes), the reply key IPv6 (36): the IPv6 packet path finds the replies and hands them to
`outbound`. An IPv4 request too long for the IPv6 link is refused with Fragmentation Needed when DF is
set and sent as IPv6 fragments when not.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pylvs.engine.egress import Buffer
from pylvs.engine.flow import F_ENGINE_ONLY
from pylvs.engine.forward.fullnat import ClientAddress
from pylvs.engine.forward.nat64 import Nat64
from pylvs.ipvs_uapi import PROTO_SCTP

if TYPE_CHECKING:
    from pylvs.engine.conntrack import Conn, ConnTable


class Nat46(Nat64):
    to_server = Nat64.as_ipv6
    to_client = Nat64.as_ipv4

    def bind(self, conn: Conn, conns: ConnTable) -> str | None:
        if conn.proto == PROTO_SCTP:
            return "method_unsupported"  # translated for TCP and UDP only
        refused = super().bind(conn, conns)
        if refused is None:
            conn.in_flow.flags |= F_ENGINE_ONLY  # the fast path has no IPv4 -> IPv6 recipe
            conn.out_flow.flags |= F_ENGINE_ONLY
        return refused

    def _client_addr_in(self, conn: Conn, ca: ClientAddress, buf: Buffer, l4: int,
                        partial: bool) -> bytearray | None:
        rebuilt = super()._client_addr_in(conn, ca, buf, l4, partial)
        conn.in_flow.flags |= F_ENGINE_ONLY  # kept after TOA too
        return rebuilt
