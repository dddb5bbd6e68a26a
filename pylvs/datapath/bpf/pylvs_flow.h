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
#define FLOW_F_TOA 0x0004         /* FULLNAT IN: insert TOA into the next client ACK (no SYN), then clear */

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
	__u8 tcp_state;        /* TCP: the connection's IPVS state as this entry last saw it (NONE for UDP) */
	__u8 tcp_flags;        /* TCP: every flag of the segments this entry forwarded, or'ed together */
	__u8 outer_saddr[16];
	__u8 outer_daddr[16];
	__u32 seq_delta;       /* reserved: FULLNAT sequence shift */
	__u32 transitions;     /* state changes this entry reported on the event ring */
	__u64 packets;         /* counters: written by the data path executing the entry */
	__u64 bytes;
	__u64 last_seen_ns;    /* bpf_ktime_get_ns() of the last packet */
};

/* The IPVS TCP state machine (pylvs/engine/tcpstate.py): states, direction offsets and the table the
 * loader copies from the engine's TRANSITIONS into pylvs_tcp_table, so the two cannot differ. */
#define PYLVS_TCP_S_ESTABLISHED 1
#define PYLVS_TCP_S_SYN_RECV 3
#define PYLVS_TCP_S_FIN_WAIT 4
#define PYLVS_TCP_S_TIME_WAIT 5
#define PYLVS_TCP_S_CLOSE 6
#define PYLVS_TCP_STATES 11
#define PYLVS_TCP_ROWS 12 /* syn, fin, ack, rst for INPUT (0), OUTPUT (4) and INPUT_ONLY (8) */
#define PYLVS_TCP_INPUT 0
#define PYLVS_TCP_OUTPUT 4
#define PYLVS_TCP_INPUT_ONLY 8

struct pylvs_tcp_table {
	__u8 next[PYLVS_TCP_ROWS][PYLVS_TCP_STATES];
};

/* One TCP state change the program made while forwarding a segment by a recipe, in the order the
 * program made them (the BPF ring buffer pylvs_events): the engine applies them in that order. */
struct pylvs_flow_event {
	__u64 ts_ns;           /* bpf_ktime_get_ns() (CLOCK_MONOTONIC) */
	struct pylvs_flow_key key; /* the segment as it arrived: the entry's key */
	__u8 tcp_flags;        /* the segment's flags byte (FIN 0x01, SYN 0x02, RST 0x04, ACK 0x10) */
	__u8 direction;        /* FLOW_DIR_* of the entry */
	__u8 old_state;
	__u8 new_state;
	__u32 transitions;     /* the entry's count after this one */
};

/* The segment that ends a TCP connection in the kernel (the ACK after its TIME_WAIT, a RST) took its
 * entries out of the map (the program's retire_flow): their last counts, by FLOW_DIR_*, reported after
 * the state change on the same ring. The engine has nothing left to withdraw. */
struct pylvs_flow_retired {
	__u64 ts_ns;           /* bpf_ktime_get_ns() */
	struct pylvs_flow_key key; /* the entry whose segment ended it */
	__u8 direction;        /* that entry's FLOW_DIR_* */
	__u8 deleted;          /* bit FLOW_DIR_*: that direction's entry was taken out here */
	__u8 pad[6];
	__u64 packets[2];      /* by FLOW_DIR_*; 0 where not deleted */
	__u64 bytes[2];
	__u64 last_seen_ns[2];
};

#endif
