/* The kernel fast path: executes the engine's FlowEntry recipes for established IPv4 flows (IPv6:
 * pylvs_fastpath6.h).
 *
 * Attached to tc ingress (SEC("tc"), direct action). For each Ethernet + IPv4 + TCP/UDP frame it
 * looks the flow up in `pylvs_flows` (filled by the engine, pylvs_flow.h) and, on a hit the punt
 * rules allow, rewrites the frame (NAT/FULLNAT addresses and ports, DR MACs, TUN encapsulation),
 * counts it in the entry and redirects it to the entry's egress interface. Everything else returns
 * TC_ACT_OK untouched, so the engine's AF_PACKET path sees it exactly as without this program.
 * The punt rules are the engine's (pylvs/engine/flow.py); each reason has a counter below.
 *
 * TCP state: FIN, RST and the ACKs of a closing connection are forwarded here like data, so they
 * never take a slower path than the data they follow. The program runs the engine's IPVS state table
 * (pylvs_tcp_table, copied from pylvs/engine/tcpstate.py at load) on the entry's tcp_state; a segment
 * that changes it writes the new state into the entry and into the other direction's entry (NAT,
 * FULLNAT), and reports the change on the ring buffer pylvs_events, which the engine applies in the
 * same order. When the ring is full the segment goes to the engine instead, unchanged. The segment
 * that ends a connection (the ACK after TIME_WAIT, a RST) takes its entries out and reports their last
 * counts (retire_flow). SYN stays the engine's (scheduling, connection reuse), but for hash-scheduled
 * services (pylvs_sched.bpf.h).
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/pkt_cls.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "pylvs_flow.h"

#define AF_INET 2
#define IP_DF 0x4000
#define IP_MF_OFFSET 0x3fff
#define L3 ETH_HLEN                /* offset of the IP header */
#define L4 (ETH_HLEN + 20)         /* offset of TCP/UDP: IP options are punted */
#define GUE_LEN (8 + 4)            /* outer UDP header + GUE header (version 0, no options) */
#define GRE_LEN 4                  /* GRE without checksum, key or sequence number */
#define PACKET_OTHERHOST 3         /* skb->pkt_type of a frame for another host's MAC (if_packet.h) */
#define LOOPBACK_IFINDEX 1
#define TH_FIN 0x01                /* the TCP flags byte */
#define TH_SYN 0x02
#define TH_RST 0x04
#define TH_ACK 0x10
#define TOA_KIND 254
#define TOA_LEN 8                  /* kind, length, client port, client IPv4 address */

/* Per-CPU counters, fixed indices (pylvs/datapath/bpf/maps.py COUNTERS mirrors the names). */
enum pylvs_counter {
	CNT_HIT = 0,          /* executed here and redirected */
	CNT_MISS,             /* TCP/UDP without an entry: to the engine */
	CNT_PASS_OTHER,       /* not TCP/UDP over IP (ARP, ICMP, ICMPv6, VLAN-tagged, ...): to the engine */
	CNT_PUNT_ENGINE_ONLY, /* the entry says so */
	CNT_PUNT_TCP_FLAGS,   /* SYN: scheduling and connection reuse stay the engine's */
	CNT_PUNT_FRAGMENT,
	CNT_PUNT_IP_OPTIONS,
	CNT_PUNT_TTL,         /* TTL <= 1: the engine answers time exceeded */
	CNT_PUNT_MTU,         /* longer than the egress MTU (GSO: a segment is): PMTU is the engine's */
	CNT_PUNT_BAD_HEADER,  /* bad IP checksum, lengths that do not add up */
	CNT_PUNT_UNSUPPORTED, /* the recipe needs what this program does not do (NAT64, tunnel checksums,
			       * a FULLNAT sequence shift) */
	CNT_PUNT_NO_ROOM,     /* TUN: the kernel would not grow this skb (beyond the ingress MTU, a GSO
			       * type other than TCP or UDP_L4, already encapsulated) */
	CNT_DROP_ERROR,       /* a helper failed halfway through a rewrite: the frame is dropped */
	CNT_TCP_EVENT,        /* executed, and its TCP state change reported on the event ring */
	CNT_PUNT_RING_FULL,   /* a state change the event ring had no room for: the engine makes it */
	CNT_PUNT_EXT_HEADER,  /* IPv6: an extension header after the fixed one (fragments: CNT_PUNT_FRAGMENT) */
	CNT_PUNT_TOA,         /* FULLNAT: TOA is due but this segment cannot take it here (GSO, data, no room
			       * in the TCP header): the engine inserts it */
	CNT_MAX,
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536); /* the loader sets the size */
	__type(key, struct pylvs_flow_key);
	__type(value, struct pylvs_flow_value);
} pylvs_flows SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, CNT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} pylvs_counters SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct pylvs_tcp_table);
} pylvs_tcp_table SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 18); /* bytes; the loader sets the size */
} pylvs_events SEC(".maps");

/* lvsd is woken once the ring holds EVENT_WAKEUP_BYTES, not for every record: it reads the ring before
 * every frame it drains and at least every few milliseconds anyway (pylvs/io/director.py EVENT_POLL),
 * so a busy second costs a few hundred wakeups, not one per connection. */
#define EVENT_WAKEUP_BYTES (64 * 1024)

static __always_inline __u64 event_wakeup(void)
{
	return bpf_ringbuf_query(&pylvs_events, BPF_RB_AVAIL_DATA) >= EVENT_WAKEUP_BYTES ?
		BPF_RB_FORCE_WAKEUP : BPF_RB_NO_WAKEUP;
}

static __always_inline int count(__u32 index, int verdict)
{
	__u64 *c = bpf_map_lookup_elem(&pylvs_counters, &index);

	if (c)
		*c += 1;
	return verdict;
}

static __always_inline __u16 fold(__u32 s)
{
	s = (s & 0xffff) + (s >> 16);
	return (s & 0xffff) + (s >> 16);
}

/* The one's-complement sum of a 20-byte IPv4 header: 0xffff when its checksum is right. */
static __always_inline __u16 ip_sum(const __u16 *words)
{
	__u32 s = 0;

#pragma unroll
	for (int i = 0; i < 10; i++)
		s += words[i];
	return fold(s);
}

/* INET_ECN_encapsulate: DSCP and ECT copied to the outer header, CE becomes ECT(0). */
static __always_inline __u8 ecn_encapsulate(__u8 tos)
{
	return (tos & 3) == 3 ? (tos & ~3) | 2 : tos;
}

static __always_inline int tunnel_len(__u8 encap)
{
	switch (encap) {
	case FLOW_ENCAP_IPIP:
		return 20;
	case FLOW_ENCAP_GUE:
		return 20 + GUE_LEN;
	case FLOW_ENCAP_GRE:
		return 20 + GRE_LEN;
	}
	return -1;
}

/* The extra bytes this recipe adds, or -1 if this program cannot execute it. */
static __always_inline int overhead_of(const struct pylvs_flow_value *v)
{
	if (v->new_family != AF_INET || v->seq_delta) /* NAT64; a FULLNAT sequence shift (not yet) */
		return -1;
	switch (v->method) {
	case FLOW_METHOD_MASQ:
	case FLOW_METHOD_FULLNAT:
	case FLOW_METHOD_ROUTE:
		return v->encap == FLOW_ENCAP_NONE ? 0 : -1;
	case FLOW_METHOD_TUNNEL:
		if (v->flags & FLOW_F_ENCAP_CSUM && v->encap != FLOW_ENCAP_IPIP) /* a sum over the payload */
			return -1;
		return tunnel_len(v->encap);
	}
	return -1;
}

/* NAT and FULLNAT checksums, after the new addresses and ports are written: both patched with the
 * recipe's deltas. bpf_l4_csum_replace looks at skb->ip_summed itself: a complete checksum gets
 * address and port deltas, a CHECKSUM_PARTIAL field (pseudo-header sum only) gets the address
 * delta alone, and BPF_F_MARK_MANGLED_0 keeps a zero UDP checksum zero. */
static __always_inline int nat_checksums(struct __sk_buff *skb, const struct pylvs_flow_value *v, int udp)
{
	__u32 csum_off = L4 + (udp ? offsetof(struct udphdr, check) : offsetof(struct tcphdr, check));
	__u64 mangled = udp ? BPF_F_MARK_MANGLED_0 : 0;
	/* The port part of the complete delta: csum_l4 = addresses + ports. */
	__u16 ports = fold((__u32)v->csum_l4 + (__u16)~v->csum_l4_partial);

	if (bpf_l4_csum_replace(skb, csum_off, 0, bpf_htons(v->csum_l4_partial), BPF_F_PSEUDO_HDR | mangled) ||
	    bpf_l4_csum_replace(skb, csum_off, 0, bpf_htons(ports), mangled))
		return -1;
	return 0;
}

/* TTL - 1 of the IPv4 header at ip_off (TUN: the inner one), its checksum patched by csum_ip (the
 * TTL's delta for tunnels, where the addresses stay). */
static __always_inline int decrement_ttl(struct __sk_buff *skb, __u32 ip_off, __u8 ttl, __u16 csum_ip)
{
	__u8 new_ttl = ttl - 1;

	if (bpf_skb_store_bytes(skb, ip_off + offsetof(struct iphdr, ttl), &new_ttl, 1, 0) ||
	    bpf_l3_csum_replace(skb, ip_off + offsetof(struct iphdr, check), 0, bpf_htons(csum_ip), 0))
		return -1;
	return 0;
}

struct outer_headers {
	struct iphdr ip;
	union {
		struct {
			struct udphdr udp;
			__u8 gue[4];
		};
		__u8 gre[4];
	};
};

/* TUN: grow room after the MAC header (the kernel keeps GSO super-frames whole, marked as tunnel
 * GSO) and write the outer IPv4 header DIP -> RIP plus UDP+GUE or GRE. The inner packet only loses
 * one TTL. 1: the kernel would not grow the skb (nothing changed); -1: a failure after changes. */
static __always_inline int encapsulate(struct __sk_buff *skb, const struct pylvs_flow_value *v, int extra,
				       __u16 tot, __u8 tos, __u16 frag_off, __u8 ttl)
{
	struct outer_headers h = {};
	__u64 flags = BPF_F_ADJ_ROOM_FIXED_GSO | BPF_F_ADJ_ROOM_ENCAP_L3_IPV4;
	__u8 proto = IPPROTO_IPIP;

	if (v->encap == FLOW_ENCAP_GUE) {
		flags |= BPF_F_ADJ_ROOM_ENCAP_L4_UDP;
		proto = IPPROTO_UDP;
		h.udp.source = v->encap_sport;
		h.udp.dest = v->encap_dport;
		h.udp.len = bpf_htons(tot + GUE_LEN);
		h.gue[1] = IPPROTO_IPIP; /* version 0, hlen 0, proto_ctype 4, flags 0 */
	} else if (v->encap == FLOW_ENCAP_GRE) {
		flags |= BPF_F_ADJ_ROOM_ENCAP_L4_GRE;
		proto = IPPROTO_GRE;
		h.gre[2] = 0x08; /* no C/K/S bits, version 0, protocol 0x0800 */
	}
	if (bpf_skb_adjust_room(skb, extra, BPF_ADJ_ROOM_MAC, flags))
		return 1; /* nothing changed: the caller punts */
	h.ip.version = 4;
	h.ip.ihl = 5;
	h.ip.tos = ecn_encapsulate(tos);
	h.ip.tot_len = bpf_htons(tot + extra);
	h.ip.frag_off = frag_off & bpf_htons(IP_DF);
	/* The kernel's tunnels: ID 0 with DF (GSO segments then count up from it), else a random one. */
	h.ip.id = h.ip.frag_off ? 0 : (__u16)bpf_get_prandom_u32();
	h.ip.ttl = ttl - 1;
	h.ip.protocol = proto;
	__builtin_memcpy(&h.ip.saddr, &v->outer_saddr[12], 4);
	__builtin_memcpy(&h.ip.daddr, &v->outer_daddr[12], 4);
	h.ip.check = ~ip_sum((const __u16 *)&h.ip);
	if (decrement_ttl(skb, L3 + extra, ttl, v->csum_ip))
		return -1;
	switch (v->encap) {
	case FLOW_ENCAP_GUE:
		return bpf_skb_store_bytes(skb, L3, &h, 20 + GUE_LEN, 0) ? -1 : 0;
	case FLOW_ENCAP_GRE:
		return bpf_skb_store_bytes(skb, L3, &h, 20 + GRE_LEN, 0) ? -1 : 0;
	}
	return bpf_skb_store_bytes(skb, L3, &h, 20, 0) ? -1 : 0;
}

/* The engine's next_state (pylvs/engine/tcpstate.py): the row within a direction block. An
 * established connection stays so without SYN, FIN or RST (the engine's common path, sES + ack); any
 * other segment takes the table, and one with none of the four flags closes (as in the engine). */
static __always_inline int tcp_next_state(__u8 state, __u8 offset, __u8 flags)
{
	struct pylvs_tcp_table *t;
	__u32 zero = 0;
	__u32 row;

	if (state == PYLVS_TCP_S_ESTABLISHED && !(flags & (TH_FIN | TH_SYN | TH_RST)))
		return state;
	if (flags & TH_RST)
		row = 3;
	else if (flags & TH_SYN)
		row = 0;
	else if (flags & TH_FIN)
		row = 1;
	else if (flags & TH_ACK)
		row = 2;
	else
		return PYLVS_TCP_S_CLOSE;
	t = bpf_map_lookup_elem(&pylvs_tcp_table, &zero);
	row += offset;
	if (!t || row >= PYLVS_TCP_ROWS || state >= PYLVS_TCP_STATES)
		return -1;
	return t->next[row][state];
}

/* The table's direction offset: replies (OUTPUT), or requests of a connection whose replies do not
 * cross the director (DR, TUN: INPUT_ONLY), or requests (INPUT). */
static __always_inline __u8 tcp_offset(const struct pylvs_flow_value *v)
{
	if (v->direction == FLOW_DIR_OUT)
		return PYLVS_TCP_OUTPUT;
	if (v->method == FLOW_METHOD_ROUTE || v->method == FLOW_METHOD_TUNNEL)
		return PYLVS_TCP_INPUT_ONLY;
	return PYLVS_TCP_INPUT;
}

/* NAT and FULLNAT: the other direction's entry is keyed by this one's rewritten tuple, swapped. */
/* NAT, FULLNAT: the other direction's entry is keyed by this one's new tuple, swapped. */
static __always_inline int has_reverse(const struct pylvs_flow_value *v)
{
	return v->method == FLOW_METHOD_MASQ || v->method == FLOW_METHOD_FULLNAT;
}

/* `k` (its proto already set) becomes the other direction's key. */
static __always_inline void reverse_key(struct pylvs_flow_key *k, const struct pylvs_flow_value *v)
{
	k->family = v->new_family;
	__builtin_memcpy(k->saddr, v->new_daddr, 16);
	__builtin_memcpy(k->daddr, v->new_saddr, 16);
	k->sport = v->new_dport;
	k->dport = v->new_sport;
}

static __always_inline void set_reverse_state(const struct pylvs_flow_value *v, __u8 proto, __u8 state)
{
	struct pylvs_flow_key rkey = {};
	struct pylvs_flow_value *r;

	if (!has_reverse(v))
		return;
	rkey.proto = proto;
	reverse_key(&rkey, v);
	r = bpf_map_lookup_elem(&pylvs_flows, &rkey);
	if (r)
		r->tcp_state = state;
}

/* The segment that ends a TCP connection here (the ACK after its TIME_WAIT, a RST) takes the
 * connection's entries out of the map and reports their last counts: a short connection then costs
 * the engine no map deletions. The other direction's entry is found from the recipe
 * (reverse_key); `key` (the caller's, reused to save stack) is restored. A packet another CPU
 * forwards by the other entry between its read and its deletion is forwarded but not counted.
 * Without room on the ring the entries stay and the engine withdraws them. */
static __always_inline void retire_flow(struct pylvs_flow_key *key, const struct pylvs_flow_value *v)
{
	struct pylvs_flow_retired *r = bpf_ringbuf_reserve(&pylvs_events, sizeof(*r), 0);
	struct pylvs_flow_value *rv;
	__u8 d = v->direction & 1;

	if (!r)
		return;
	__builtin_memset(r, 0, sizeof(*r));
	r->ts_ns = v->last_seen_ns;
	r->key = *key;
	r->direction = d;
	r->packets[d] = v->packets;
	r->bytes[d] = v->bytes;
	r->last_seen_ns[d] = v->last_seen_ns;
	if (has_reverse(v)) {
		reverse_key(key, v);
		rv = bpf_map_lookup_elem(&pylvs_flows, key);
		if (rv) {
			r->packets[d ^ 1] = rv->packets;
			r->bytes[d ^ 1] = rv->bytes;
			r->last_seen_ns[d ^ 1] = rv->last_seen_ns;
			if (!bpf_map_delete_elem(&pylvs_flows, key))
				r->deleted |= 1 << (d ^ 1);
		}
		*key = r->key;
	}
	if (!bpf_map_delete_elem(&pylvs_flows, key))
		r->deleted |= 1 << d;
	bpf_ringbuf_submit(r, event_wakeup());
}

/* FULLNAT (FLOW_F_TOA): the client's address as TOA first among the TCP options (as the engine's
 * clientaddr.insert_option: an option after an end-of-list padding would not be read) of a segment
 * without payload (the handshake's ACK), after the recipe's rewrite. The frame grows at its tail
 * (bpf_skb_change_tail, which also drops Ethernet padding) and the options move 8 bytes along, so the
 * TCP header stays where it is: a CHECKSUM_PARTIAL frame's csum_start still points at it and the
 * device's sum covers the option. Checksums: IP by the length, TCP by the pseudo-header length (what a
 * partial field holds), the data offset word and the option's words (the moved words keep their sum).
 * `key` holds the client as it sent the segment. -1: a helper failed after changes. */
static __always_inline int insert_toa(struct __sk_buff *skb, const struct pylvs_flow_key *key, __u16 tot,
				      __u8 doff_byte)
{
	__u32 opt_words = ((doff_byte >> 4) - 5) & 0xf, word;

	__u32 csum_off = L4 + offsetof(struct tcphdr, check);
	__u16 toa[TOA_LEN / 2] = {bpf_htons(TOA_KIND << 8 | TOA_LEN)};
	__u16 old_word = doff_byte, new_word = doff_byte + (TOA_LEN / 4 << 4);
	__be16 tcp_len = bpf_htons(tot - 20), new_tcp_len = bpf_htons(tot - 20 + TOA_LEN);
	__be16 new_tot = bpf_htons(tot + TOA_LEN);
	__u8 new_doff = new_word;
	__u32 sum;

	__builtin_memcpy(&toa[1], &key->sport, 2);
	__builtin_memcpy(&toa[2], &key->saddr[12], 4);
	sum = fold((__u32)toa[0] + toa[1] + toa[2] + toa[3]);
	/* The data offset's 16-bit word (data offset, reserved bits, then the flags) as it lies in memory. */
	old_word = bpf_htons(old_word << 8);
	new_word = bpf_htons(new_word << 8);
	if (bpf_skb_change_tail(skb, ETH_HLEN + tot + TOA_LEN, 0))
		return -1;
#pragma unroll
	for (int i = 7; i >= 0; i--) { /* (at most 8 option words: the caller checked the room) */
		if (i >= opt_words)
			continue;
		if (bpf_skb_load_bytes(skb, L4 + 20 + 4 * i, &word, 4) ||
		    bpf_skb_store_bytes(skb, L4 + 20 + TOA_LEN + 4 * i, &word, 4, 0))
			return -1;
	}
	if (bpf_skb_store_bytes(skb, L4 + 20, toa, TOA_LEN, 0) ||
	    bpf_skb_store_bytes(skb, L4 + 12, &new_doff, 1, 0) ||
	    bpf_skb_store_bytes(skb, L3 + offsetof(struct iphdr, tot_len), &new_tot, 2, 0) ||
	    bpf_l3_csum_replace(skb, L3 + offsetof(struct iphdr, check), bpf_htons(tot), new_tot, 2) ||
	    bpf_l4_csum_replace(skb, csum_off, tcp_len, new_tcp_len, BPF_F_PSEUDO_HDR | 2) ||
	    bpf_l4_csum_replace(skb, csum_off, old_word, new_word, 2) ||
	    bpf_l4_csum_replace(skb, csum_off, 0, sum, 0))
		return -1;
	return 0;
}

#include "pylvs_fastpath6.h"
#include "pylvs_sched.bpf.h" /* SYNs of hash-scheduled services: scheduled here */

SEC("tc")
int pylvs_fastpath(struct __sk_buff *skb)
{
	struct pylvs_flow_key key;
	struct pylvs_flow_event *ev = NULL;
	struct pylvs_flow_value *v;
	void *data, *data_end;
	struct ethhdr *eth;
	__be32 ports;
	struct iphdr *ip;
	__u32 seg, need = L4 + sizeof(struct tcphdr);
	__u16 tot, frag_off;
	__u8 ttl, tos, tcp_flags = 0, doff_byte = 0;
	int udp, extra, rc, state = -1, toa = 0;

	if (skb->vlan_present)
		return count(CNT_PASS_OTHER, TC_ACT_OK);
	/* A frame for another host's MAC (a switch flooding an unknown unicast address) is the kernel's
	 * to drop, as ip_rcv does before IPVS could see it. BPF_PROG_TEST_RUN runs the program on lo,
	 * whose all-zero address makes every test frame "other host"; lvsd never attaches to lo. */
	if (skb->pkt_type == PACKET_OTHERHOST && skb->ifindex != LOOPBACK_IFINDEX)
		return count(CNT_PASS_OTHER, TC_ACT_OK);
	if (skb->protocol == bpf_htons(ETH_P_IPV6))
		return pylvs_fastpath6(skb);
	if (skb->len < need)
		need = skb->len;
	/* Headers in the linear part (same bytes, only where they live changes). */
	bpf_skb_pull_data(skb, need);
	data = (void *)(long)skb->data;
	data_end = (void *)(long)skb->data_end;
	eth = data;
	ip = data + L3;
	if ((void *)(ip + 1) > data_end || eth->h_proto != bpf_htons(ETH_P_IP))
		return count(CNT_PASS_OTHER, TC_ACT_OK);
	if (ip->version != 4 || ip->ihl < 5)
		return count(CNT_PUNT_BAD_HEADER, TC_ACT_OK);
	if (ip->ihl > 5)
		return count(CNT_PUNT_IP_OPTIONS, TC_ACT_OK);
	if (ip->frag_off & bpf_htons(IP_MF_OFFSET))
		return count(CNT_PUNT_FRAGMENT, TC_ACT_OK);
	if (ip->protocol != IPPROTO_TCP && ip->protocol != IPPROTO_UDP)
		return count(CNT_PASS_OTHER, TC_ACT_OK);
	udp = ip->protocol == IPPROTO_UDP;
	tot = bpf_ntohs(ip->tot_len);
	if (ip_sum((const __u16 *)ip) != 0xffff || tot < 20 + (udp ? sizeof(struct udphdr) : sizeof(struct tcphdr)) ||
	    tot > skb->len - ETH_HLEN)
		return count(CNT_PUNT_BAD_HEADER, TC_ACT_OK);
	if (udp) {
		struct udphdr *uh = (void *)(ip + 1);

		if ((void *)(uh + 1) > data_end)
			return count(CNT_PUNT_BAD_HEADER, TC_ACT_OK);
		ports = *(__be32 *)uh; /* source and destination */
		seg = 20 + sizeof(struct udphdr);
	} else {
		struct tcphdr *th = (void *)(ip + 1);

		if ((void *)(th + 1) > data_end || th->doff < 5)
			return count(CNT_PUNT_BAD_HEADER, TC_ACT_OK);
		if (th->syn && pylvs_ksched_syn(skb, eth, ip, th) == KSCHED_PUNT)
			return count(CNT_PUNT_TCP_FLAGS, TC_ACT_OK);
		tcp_flags = ((__u8 *)th)[13];
		doff_byte = ((__u8 *)th)[12];
		ports = *(__be32 *)th;
		seg = 20 + th->doff * 4;
	}
	if (ip->ttl <= 1)
		return count(CNT_PUNT_TTL, TC_ACT_OK);
	__builtin_memset(&key, 0, sizeof(key)); /* here, not above: the SYN path's stack may take its place */
	__builtin_memcpy(&key.sport, &ports, 4);
	key.family = AF_INET;
	key.proto = ip->protocol;
	key.saddr[10] = key.saddr[11] = key.daddr[10] = key.daddr[11] = 0xff;
	__builtin_memcpy(&key.saddr[12], &ip->saddr, 4);
	__builtin_memcpy(&key.daddr[12], &ip->daddr, 4);
	ttl = ip->ttl;
	tos = ip->tos;
	frag_off = ip->frag_off;

	v = bpf_map_lookup_elem(&pylvs_flows, &key);
	if (!v)
		return count(CNT_MISS, TC_ACT_OK);
	if (v->flags & FLOW_F_ENGINE_ONLY)
		return count(CNT_PUNT_ENGINE_ONLY, TC_ACT_OK);
	extra = overhead_of(v);
	if (extra < 0)
		return count(CNT_PUNT_UNSUPPORTED, TC_ACT_OK);
	if (v->flags & FLOW_F_TOA && !udp && (tcp_flags & (TH_SYN | TH_RST | TH_ACK)) == TH_ACK) {
		/* TOA due: here only into a segment without payload whose header has room for it. */
		if (skb->gso_size || tot != seg || seg + TOA_LEN > 20 + 60)
			return count(CNT_PUNT_TOA, TC_ACT_OK);
		toa = 1;
		extra = TOA_LEN;
	}
	/* A GSO super-frame leaves as segments of headers + gso_size; anything else as it is. */
	seg = skb->gso_size ? seg + skb->gso_size : tot;
	if (seg + extra > v->mtu)
		return count(CNT_PUNT_MTU, TC_ACT_OK);
	if (!udp) {
		state = tcp_next_state(v->tcp_state, tcp_offset(v), tcp_flags);
		if (state < 0)
			return count(CNT_PUNT_UNSUPPORTED, TC_ACT_OK);
		if (state != v->tcp_state || toa) {
			/* Reserved before anything changes: without room, the engine makes the change. A TOA
			 * insertion is reported even without a change: the engine learns it is delivered. */
			ev = bpf_ringbuf_reserve(&pylvs_events, sizeof(*ev), 0);
			if (!ev)
				return count(CNT_PUNT_RING_FULL, TC_ACT_OK);
			ev->key = key;
			ev->tcp_flags = tcp_flags;
			ev->direction = v->direction;
			ev->old_state = v->tcp_state;
			ev->new_state = state;
		}
	}

	if (v->method == FLOW_METHOD_TUNNEL) {
		rc = encapsulate(skb, v, extra, tot, tos, frag_off, ttl);
		if (rc > 0) { /* unchanged: the engine decides */
			if (ev)
				bpf_ringbuf_discard(ev, BPF_RB_NO_WAKEUP);
			return count(CNT_PUNT_NO_ROOM, TC_ACT_OK);
		}
		if (rc || bpf_skb_store_bytes(skb, 0, v->dmac, 2 * ETH_ALEN, 0)) {
			if (ev)
				bpf_ringbuf_discard(ev, BPF_RB_NO_WAKEUP);
			return count(CNT_DROP_ERROR, TC_ACT_SHOT);
		}
	} else {
		/* The headers are in the linear part and checked: written in place, then the checksum
		 * helpers (after them, packet pointers are no longer valid). */
		int nat = v->method != FLOW_METHOD_ROUTE;

		__builtin_memcpy(eth, v->dmac, 2 * ETH_ALEN);
		ip->ttl = ttl - 1;
		if (nat) {
			__builtin_memcpy(&ip->saddr, &v->new_saddr[12], 4);
			__builtin_memcpy(&ip->daddr, &v->new_daddr[12], 4);
			__builtin_memcpy((void *)(ip + 1), &v->new_sport, 4); /* source and destination port */
		}
		if (bpf_l3_csum_replace(skb, L3 + offsetof(struct iphdr, check), 0, bpf_htons(v->csum_ip), 0) ||
		    (nat && nat_checksums(skb, v, udp))) {
			if (ev)
				bpf_ringbuf_discard(ev, BPF_RB_NO_WAKEUP);
			return count(CNT_DROP_ERROR, TC_ACT_SHOT);
		}
		if (toa) {
			if (insert_toa(skb, &key, tot, doff_byte)) {
				if (ev)
					bpf_ringbuf_discard(ev, BPF_RB_NO_WAKEUP);
				return count(CNT_DROP_ERROR, TC_ACT_SHOT);
			}
			v->flags &= ~FLOW_F_TOA; /* delivered: the next segments go as they are */
		}
	}
	return flow_hit(v, &key, tot, tcp_flags, state, ev);
}

char _license[] SEC("license") = "GPL";
