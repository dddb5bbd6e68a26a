"""The numbers IPVS and ipvsadm share (include/uapi/linux/ip_vs.h), defined once for all of pylvs.

Connection flags, service flags, forwarding methods and protocol numbers are written here and
nowhere else: the engine, the sync protocol, the ipvsadm kit and the keepalived translation all
import them, as the kernel and ipvsadm both compile against the same UAPI header.
"""

from __future__ import annotations

import enum

# -- protocols --------------------------------------------------------------------------------
PROTO_ICMP = 1
PROTO_IPIP = 4
PROTO_TCP = 6
PROTO_UDP = 17
PROTO_GRE = 47
PROTO_ICMPV6 = 58
PROTO_SCTP = 132
PROTO_NAMES = {PROTO_TCP: "TCP", PROTO_UDP: "UDP", PROTO_SCTP: "SCTP"}

# -- address families (the values of socket.AF_INET / AF_INET6 on Linux) ----------------------
AF_INET = 2
AF_INET6 = 10

# -- IP_VS_CONN_F_*: connection flags ---------------------------------------------------------
CONN_F_FWD_MASK = 0x0007
CONN_F_MASQ = 0x0000
CONN_F_LOCALNODE = 0x0001
CONN_F_TUNNEL = 0x0002
CONN_F_DROUTE = 0x0003
CONN_F_BYPASS = 0x0004
CONN_F_FULLNAT = 0x0005  # DPVS's value; not in the mainline header
CONN_F_SYNC = 0x0020
CONN_F_HASHED = 0x0040
CONN_F_NOOUTPUT = 0x0080
CONN_F_INACTIVE = 0x0100
CONN_F_OUT_SEQ = 0x0200
CONN_F_IN_SEQ = 0x0400
CONN_F_SEQ_MASK = CONN_F_OUT_SEQ | CONN_F_IN_SEQ
CONN_F_NO_CPORT = 0x0800
CONN_F_TEMPLATE = 0x1000
CONN_F_ONE_PACKET = 0x2000
# pylvs's own bit above the UAPI ones: a template whose controlled connection got established (the
# kernel keeps this as the template's state, IP_VS_CTPL_S_ASSURED, sent as such by sync).
CONN_F_ASSURED = 0x10000

# -- IP_VS_SVC_F_*: service flags -------------------------------------------------------------
SVC_F_PERSISTENT = 0x0001
SVC_F_HASHED = 0x0002
SVC_F_ONEPACKET = 0x0004
SVC_F_SCHED1 = 0x0008
SVC_F_SCHED2 = 0x0010
SVC_F_SCHED3 = 0x0020
SVC_F_SCHED_MASK = SVC_F_SCHED1 | SVC_F_SCHED2 | SVC_F_SCHED3

# -- IP_VS_TUNNEL_ENCAP_* ---------------------------------------------------------------------
TUNNEL_TYPES = {"ipip": 0, "gue": 1, "gre": 2}
TUNNEL_FLAGS = {"nocsum": 0, "csum": 1, "remcsum": 2}


class Method(enum.IntEnum):
    """Forwarding method: the kernel's IP_VS_CONN_F_FWD_MASK values (FULLNAT as DPVS numbers it)."""

    MASQ = CONN_F_MASQ
    LOCAL = CONN_F_LOCALNODE
    TUNNEL = CONN_F_TUNNEL
    ROUTE = CONN_F_DROUTE
    FULLNAT = CONN_F_FULLNAT

    @property
    def label(self) -> str:
        """The name ipvsadm prints in the Forward column."""
        return METHOD_LABELS[self]


METHOD_LABELS = {Method.MASQ: "Masq", Method.LOCAL: "Local", Method.TUNNEL: "Tunnel", Method.ROUTE: "Route",
                 Method.FULLNAT: "FullNat"}
