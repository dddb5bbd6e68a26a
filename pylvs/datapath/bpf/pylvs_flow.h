/* The FlowEntry layout shared with the Python engine (pylvs/engine/flow.py, KEY_FIELDS and
 * VALUE_FIELDS). Field for field the same; tests/unit/test_flow_layout.py compiles this header and
 * compares offsets and sizes. Addresses are 16 bytes, IPv4 as an IPv4-mapped IPv6 address.
 * Natural alignment throughout: no packing attribute needed.
 */
#ifndef PYLVS_FLOW_H
#define PYLVS_FLOW_H

#include <linux/types.h>

#define FLOW_DIR_IN 0  /* client -> real server */
#define FLOW_DIR_OUT 1 /* real server -> client (NAT, FULLNAT replies) */

#define FLOW_F_ENGINE_ONLY 0x0001 /* every packet of this direction goes to the engine */
#define FLOW_F_ENCAP_CSUM 0x0002  /* tunnel checksum: GUE UDP checksum, GRE C bit */

#define FLOW_ENCAP_NONE 0
#define FLOW_ENCAP_IPIP 1
#define FLOW_ENCAP_GUE 2
#define FLOW_ENCAP_GRE 3

/* IP_VS_CONN_F_FWD_MASK values */
#define FLOW_METHOD_MASQ 0
#define FLOW_METHOD_TUNNEL 2
#define FLOW_METHOD_ROUTE 3
#define FLOW_METHOD_FULLNAT 5

struct pylvs_flow_key {
	__u8 family; /* AF_INET (2) or AF_INET6 (10) */
	__u8 proto;
	__u16 pad;
	__u8 saddr[16];
	__u8 daddr[16];
	__be16 sport;
	__be16 dport;
};

struct pylvs_flow_value {
	__u8 method;
	__u8 direction;
	__u16 flags;
	__u8 new_family;
	__u8 encap;
	__u16 mtu;             /* largest IP total length the egress link takes */
	__u32 ifindex;         /* egress interface */
	__u8 dmac[6];
	__u8 smac[6];
	__u8 new_saddr[16];
	__u8 new_daddr[16];
	__be16 new_sport;
	__be16 new_dport;
	__u16 csum_ip;         /* one's-complement delta for the IPv4 header checksum, TTL - 1 included */
	__u16 csum_l4;         /* delta for a complete TCP/UDP checksum */
	__u16 csum_l4_partial; /* delta for a CHECKSUM_PARTIAL field (pseudo-header sum only) */
	__be16 encap_sport;    /* GUE outer UDP source port */
	__be16 encap_dport;    /* GUE outer UDP destination port */
	__u16 pad2;
	__u8 outer_saddr[16];
	__u8 outer_daddr[16];
	__u32 seq_delta;       /* reserved: FULLNAT sequence shift */
	__u32 pad3;
	__u64 packets;         /* counters: written by the data path executing the entry */
	__u64 bytes;
	__u64 last_seen_ns;    /* bpf_ktime_get_ns() of the last packet */
};

#endif
