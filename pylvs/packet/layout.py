"""Offsets of the header fields the engine reads and writes.

Every frame the engine handles starts with a virtio_net_hdr, then Ethernet, then (for IPv4) the
IP header at a fixed offset, since VLAN tags are delivered out of band by AF_PACKET.
"""

from pylvs.packet.vnet import VNET_HDR_LEN

Buffer = bytearray | memoryview  # a frame: a received ring slot, or one the engine built

ETH = VNET_HDR_LEN           # Ethernet header start
ETH_DST = ETH
ETH_SRC = ETH + 6
ETH_TYPE = ETH + 12
ETH_LEN = 14
IP = ETH + ETH_LEN           # IPv4 header start (fixed)

ETHERTYPE_IPV4 = 0x0800
ETHERTYPE_ARP = 0x0806

# IPv4 header fields, relative to IP
IP_VER_IHL = 0
IP_TOS = 1
IP_TOTLEN = 2
IP_ID = 4
IP_FRAG = 6
IP_TTL = 8
IP_PROTO = 9
IP_CSUM = 10
IP_SRC = 12
IP_DST = 16

IP_MF = 0x2000
IP_DF = 0x4000
IP_OFFMASK = 0x1FFF

PROTO_ICMP = 1
PROTO_IPIP = 4
PROTO_TCP = 6
PROTO_UDP = 17
PROTO_GRE = 47

# L4 checksum offsets, relative to the L4 header
TCP_CSUM = 16
UDP_CSUM = 6
ICMP_CSUM = 2

TCP_FIN = 0x01
TCP_SYN = 0x02
TCP_RST = 0x04
TCP_ACK = 0x10
