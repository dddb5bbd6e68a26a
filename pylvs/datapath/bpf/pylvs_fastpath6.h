/* The kernel fast path for IPv6: established flows of NAT66, FULLNAT6, DR and TUN over IPv6.
 *
 * Included by pylvs_fastpath.bpf.c after its maps, counters and TCP state machine, which IPv6 shares:
 * the same flow map (16-byte addresses, family AF_INET6 in the key), the same punt rules and counters,
 * the same TCP state table and event ring. What differs is the header: no header checksum (the hop
 * limit goes down without one), the addresses at 8 and 24, the L4 header right after 40 bytes.
 *
 * SYNs of hash-scheduled services are scheduled here as IPv4 ones are (pylvs_sched.bpf.h).
 *
 * Punted untouched (TC_ACT_OK) to the engine, besides what IPv4 punts: any extension header (only a
 * TCP or UDP header directly after the fixed header is taken; a fragment header counts as a
 * fragment), ICMPv6, a UDP checksum of zero (IPv6 forbids it; the engine decides), GUE over IPv6
 * (its UDP checksum covers the whole inner packet, which a GSO frame cannot have here) and NAT64.
 *
 * Checksums: the address part of the L4 delta is a pseudo-header change. With CHECKSUM_COMPLETE the
 * kernel's skb->csum covers the header, where IPv6 has no checksum to balance a change: the addresses
 * and the hop limit are written with BPF_F_RECOMPUTE_CSUM, so skb->csum follows them (the L4 helper's
 * own pseudo-header correction then balances the L4 field), on every kernel, without BPF_F_IPV6.
 */
#ifndef PYLVS_FASTPATH6_H
#define PYLVS_FASTPATH6_H

#include <linux/ipv6.h>

#define AF_INET6 10
#define IP6_LEN 40
#define L4_6 (ETH_HLEN + IP6_LEN) /* TCP/UDP: any extension header is punted */
#define IP6_HLIM 7                /* offset of the hop limit; the addresses follow at 8 and 24 */
#define NH_HOP 0
#define NH_IPV6 41
#define NH_ROUTING 43
#define NH_FRAGMENT 44
#define NH_GRE 47
#define NH_AUTH 51
#define NH_DEST 60
#define NH_MOBILITY 135
#define NH_HIP 139
#define NH_SHIM6 140

static __always_inline int is_extension_header(__u8 nh)
{
	switch (nh) {
	case NH_HOP:
	case NH_ROUTING:
	case NH_AUTH:
	case NH_DEST:
	case NH_MOBILITY:
	case NH_HIP:
	case NH_SHIM6:
	case 253: /* experimental (RFC 3692) */
	case 254:
		return 1;
	}
	return 0;
}

/* The extra bytes an IPv6 recipe adds, or -1 if this program cannot execute it: NAT64, a FULLNAT
 * sequence shift (not yet), a tunnel checksum (a sum over the payload; GUE over IPv6 always has one),
 * a tunnel whose source the engine has not set yet. */
static __always_inline int overhead6_of(const struct pylvs_flow_value *v)
{
	const __u64 *src = (const __u64 *)v->outer_saddr; /* 8-aligned in the value (pylvs_flow.h) */

	if (v->new_family != AF_INET6 || v->seq_delta || v->flags & FLOW_F_ENCAP_CSUM)
		return -1;
	if (v->method == FLOW_METHOD_MASQ || v->method == FLOW_METHOD_FULLNAT || v->method == FLOW_METHOD_ROUTE)
		return v->encap == FLOW_ENCAP_NONE ? 0 : -1;
	if (v->method != FLOW_METHOD_TUNNEL)
		return -1;
	if (!(src[0] | src[1]))
		return -1;
	if (v->encap == FLOW_ENCAP_IPIP)
		return IP6_LEN;
	return v->encap == FLOW_ENCAP_GRE ? IP6_LEN + GRE_LEN : -1;
}

/* Reserve the event of the TCP state change this segment makes, before anything changes: the
 * counter that punts the segment, or -1 to go on (`*ev` stays NULL when the state stays). */
static __always_inline int begin_state_change(const struct pylvs_flow_value *v, const struct pylvs_flow_key *key,
					      __u8 tcp_flags, int *state, struct pylvs_flow_event **ev)
{
	struct pylvs_flow_event *e;

	*state = tcp_next_state(v->tcp_state, tcp_offset(v), tcp_flags);
	if (*state < 0)
		return CNT_PUNT_UNSUPPORTED;
	if (*state == v->tcp_state)
		return -1;
	e = bpf_ringbuf_reserve(&pylvs_events, sizeof(*e), 0);
	if (!e)
		return CNT_PUNT_RING_FULL;
	e->key = *key;
	e->tcp_flags = tcp_flags;
	e->direction = v->direction;
	e->old_state = v->tcp_state;
	e->new_state = *state;
	*ev = e;
	return -1;
}

/* A frame executed by the recipe (both families): counted in the entry, the state change (if any)
 * made and reported, the connection's entries retired if this segment ends it, and redirected. */
static __always_inline int flow_hit(struct pylvs_flow_value *v, struct pylvs_flow_key *key, __u32 len,
				    __u8 tcp_flags, int state, struct pylvs_flow_event *ev)
{
	__sync_fetch_and_add(&v->packets, 1);
	__sync_fetch_and_add(&v->bytes, len);
	v->last_seen_ns = bpf_ktime_get_ns();
	if (key->proto == IPPROTO_TCP)
		v->tcp_flags |= tcp_flags;
	if (ev) {
		v->tcp_state = state;
		set_reverse_state(v, key->proto, state);
		ev->transitions = ++v->transitions;
		ev->ts_ns = v->last_seen_ns;
		bpf_ringbuf_submit(ev, event_wakeup());
		count(CNT_TCP_EVENT, 0);
		/* CLOSE ends it; so does FIN_WAIT where replies do not cross the director (DR, TUN): nothing
		 * moves such a connection on (ip_vs's INPUT_ONLY table), the engine keeps it for its
		 * timeout and forwards what comes after (a client's last ACK) itself. */
		if (state == PYLVS_TCP_S_CLOSE || (state == PYLVS_TCP_S_FIN_WAIT && !has_reverse(v)))
			retire_flow(key, v);
	} else if (key->proto == IPPROTO_TCP && v->tcp_state == PYLVS_TCP_S_TIME_WAIT &&
		   !(tcp_flags & (TH_SYN | TH_FIN | TH_RST))) {
		retire_flow(key, v); /* the last ACK */
	}
	count(CNT_HIT, 0);
	return bpf_redirect(v->ifindex, 0);
}

/* NAT66 and FULLNAT6 (addresses, ports, hop limit, L4 checksum by the recipe's deltas) and DR (hop
 * limit only): MACs and ports written in place first, then the helpers. Addresses are stored straight
 * from the recipe (new_saddr and new_daddr are contiguous): the stack stays small, as the program's
 * other paths need most of its 512 bytes. */
static __always_inline int rewrite6(struct __sk_buff *skb, const struct pylvs_flow_value *v, struct ethhdr *eth,
				    void *l4, int udp, __u8 hlim)
{
	__u32 csum_off = L4_6 + (udp ? offsetof(struct udphdr, check) : offsetof(struct tcphdr, check));
	__u64 mangled = udp ? BPF_F_MARK_MANGLED_0 : 0;
	__u8 new_hlim = hlim - 1;
	__u16 ports;

	__builtin_memcpy(eth, v->dmac, 2 * ETH_ALEN);
	if (v->method != FLOW_METHOD_ROUTE)
		__builtin_memcpy(l4, &v->new_sport, 4); /* source and destination port */
	if (bpf_skb_store_bytes(skb, ETH_HLEN + IP6_HLIM, &new_hlim, 1, BPF_F_RECOMPUTE_CSUM))
		return -1;
	if (v->method == FLOW_METHOD_ROUTE)
		return 0;
	/* The port part of the complete delta: csum_l4 = addresses + ports (as nat_checksums). */
	ports = fold((__u32)v->csum_l4 + (__u16)~v->csum_l4_partial);
	if (bpf_skb_store_bytes(skb, ETH_HLEN + IP6_HLIM + 1, v->new_saddr, 32, BPF_F_RECOMPUTE_CSUM) ||
	    bpf_l4_csum_replace(skb, csum_off, 0, bpf_htons(v->csum_l4_partial), BPF_F_PSEUDO_HDR | mangled) ||
	    bpf_l4_csum_replace(skb, csum_off, 0, bpf_htons(ports), mangled))
		return -1;
	return 0;
}

/* TUN over IPv6: grow room after the MAC header (tunnel GSO: super-frames stay whole) and write the
 * outer header from the director's address to the real server, next header 41 (IPv6 in IPv6) or GRE
 * (protocol 0x86DD). The outer traffic class is the inner one (ECN as encapsulated), the outer hop
 * limit the inner one after its - 1, the flow label 0 (as the engine). Written in three stores (the
 * first 8 bytes, the addresses straight from the recipe, the GRE header) to keep the stack small.
 * 1: the kernel would not grow the skb (nothing changed); -1: a failure after changes. */
static __always_inline int encapsulate6(struct __sk_buff *skb, const struct pylvs_flow_value *v, int extra,
					__u16 inner_len, __u8 tclass, __u8 hlim)
{
	__u64 flags = BPF_F_ADJ_ROOM_FIXED_GSO | BPF_F_ADJ_ROOM_ENCAP_L3_IPV6;
	__u8 nh = NH_IPV6, new_hlim = hlim - 1;
	__be32 word[2];
	__be32 gre = bpf_htonl(0x86dd); /* no C/K/S bits, version 0, protocol IPv6 */

	if (v->encap == FLOW_ENCAP_GRE) {
		flags |= BPF_F_ADJ_ROOM_ENCAP_L4_GRE;
		nh = NH_GRE;
	}
	if (bpf_skb_adjust_room(skb, extra, BPF_ADJ_ROOM_MAC, flags))
		return 1;
	tclass = ecn_encapsulate(tclass);
	/* version 6, traffic class, flow label 0; payload length, next header, hop limit */
	word[0] = bpf_htonl(6 << 28 | (__u32)tclass << 20);
	word[1] = bpf_htonl((__u32)(inner_len + extra - IP6_LEN) << 16 | (__u32)nh << 8 | new_hlim);
	if (bpf_skb_store_bytes(skb, ETH_HLEN + extra + IP6_HLIM, &new_hlim, 1, BPF_F_RECOMPUTE_CSUM) ||
	    bpf_skb_store_bytes(skb, ETH_HLEN, word, 8, BPF_F_RECOMPUTE_CSUM) ||
	    bpf_skb_store_bytes(skb, ETH_HLEN + 8, v->outer_saddr, 32, BPF_F_RECOMPUTE_CSUM))
		return -1;
	if (v->encap == FLOW_ENCAP_GRE)
		return bpf_skb_store_bytes(skb, ETH_HLEN + IP6_LEN, &gre, GRE_LEN, BPF_F_RECOMPUTE_CSUM) ? -1 : 0;
	return 0;
}

/* A SYN: scheduled here for hash-scheduled services (pylvs_sched.bpf.h, included after this header). */
static __always_inline int pylvs_ksched_syn6(struct __sk_buff *skb, struct ethhdr *eth, struct ipv6hdr *ip6,
					     struct tcphdr *th);

/* An IPv6 frame (skb->protocol ETH_P_IPV6): executed by its recipe, or passed on untouched. */
static __always_inline int pylvs_fastpath6(struct __sk_buff *skb)
{
	struct pylvs_flow_key key = {};
	struct pylvs_flow_event *ev = NULL;
	struct pylvs_flow_value *v;
	void *data, *data_end, *l4;
	struct ipv6hdr *ip6;
	__u32 seg, need = L4_6 + sizeof(struct tcphdr);
	__u16 plen;
	__u8 hlim, tclass, tcp_flags = 0;
	int udp, extra, rc, state = -1;

	if (skb->len < need)
		need = skb->len;
	bpf_skb_pull_data(skb, need);
	data = (void *)(long)skb->data;
	data_end = (void *)(long)skb->data_end;
	ip6 = data + ETH_HLEN;
	l4 = data + L4_6;
	if ((void *)(ip6 + 1) > data_end || ip6->version != 6)
		return count(CNT_PUNT_BAD_HEADER, TC_ACT_OK);
	if (ip6->nexthdr == NH_FRAGMENT)
		return count(CNT_PUNT_FRAGMENT, TC_ACT_OK);
	if (is_extension_header(ip6->nexthdr))
		return count(CNT_PUNT_EXT_HEADER, TC_ACT_OK);
	if (ip6->nexthdr != IPPROTO_TCP && ip6->nexthdr != IPPROTO_UDP)
		return count(CNT_PASS_OTHER, TC_ACT_OK); /* ICMPv6 (neighbour discovery, errors, echo), ... */
	udp = ip6->nexthdr == IPPROTO_UDP;
	plen = bpf_ntohs(ip6->payload_len);
	if (plen < (udp ? sizeof(struct udphdr) : sizeof(struct tcphdr)) || IP6_LEN + plen > skb->len - ETH_HLEN)
		return count(CNT_PUNT_BAD_HEADER, TC_ACT_OK);
	if (udp) {
		struct udphdr *uh = l4;

		if ((void *)(uh + 1) > data_end || !uh->check)
			return count(CNT_PUNT_BAD_HEADER, TC_ACT_OK);
		key.sport = uh->source;
		key.dport = uh->dest;
		seg = IP6_LEN + sizeof(struct udphdr);
	} else {
		struct tcphdr *th = l4;

		if ((void *)(th + 1) > data_end || th->doff < 5)
			return count(CNT_PUNT_BAD_HEADER, TC_ACT_OK);
		if (th->syn && pylvs_ksched_syn6(skb, data, ip6, th) < 0) /* KSCHED_PUNT */
			return count(CNT_PUNT_TCP_FLAGS, TC_ACT_OK);
		tcp_flags = ((__u8 *)th)[13];
		key.sport = th->source;
		key.dport = th->dest;
		seg = IP6_LEN + th->doff * 4;
	}
	if (ip6->hop_limit <= 1)
		return count(CNT_PUNT_TTL, TC_ACT_OK);
	key.family = AF_INET6;
	key.proto = ip6->nexthdr;
	__builtin_memcpy(key.saddr, &ip6->saddr, 16);
	__builtin_memcpy(key.daddr, &ip6->daddr, 16);
	hlim = ip6->hop_limit;
	tclass = ip6->priority << 4 | ip6->flow_lbl[0] >> 4;

	v = bpf_map_lookup_elem(&pylvs_flows, &key);
	if (!v)
		return count(CNT_MISS, TC_ACT_OK);
	if (v->flags & FLOW_F_ENGINE_ONLY)
		return count(CNT_PUNT_ENGINE_ONLY, TC_ACT_OK);
	extra = overhead6_of(v);
	if (extra < 0)
		return count(CNT_PUNT_UNSUPPORTED, TC_ACT_OK);
	/* A GSO super-frame leaves as segments of headers + gso_size; anything else as it is. */
	seg = skb->gso_size ? seg + skb->gso_size : IP6_LEN + plen;
	if (seg + extra > v->mtu)
		return count(CNT_PUNT_MTU, TC_ACT_OK);
	if (!udp) {
		rc = begin_state_change(v, &key, tcp_flags, &state, &ev);
		if (rc >= 0)
			return count(rc, TC_ACT_OK);
	}
	if (v->method == FLOW_METHOD_TUNNEL) {
		rc = encapsulate6(skb, v, extra, IP6_LEN + plen, tclass, hlim);
		if (rc > 0) { /* unchanged: the engine decides */
			if (ev)
				bpf_ringbuf_discard(ev, BPF_RB_NO_WAKEUP);
			return count(CNT_PUNT_NO_ROOM, TC_ACT_OK);
		}
		if (!rc)
			rc = bpf_skb_store_bytes(skb, 0, v->dmac, 2 * ETH_ALEN, 0);
	} else {
		rc = rewrite6(skb, v, data, l4, udp, hlim);
	}
	if (rc) {
		if (ev)
			bpf_ringbuf_discard(ev, BPF_RB_NO_WAKEUP);
		return count(CNT_DROP_ERROR, TC_ACT_SHOT);
	}
	return flow_hit(v, &key, IP6_LEN + plen, tcp_flags, state, ev);
}

#endif
