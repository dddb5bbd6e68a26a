/* The router's tunnels on the TUN lab's direct path (bench/tunnel_router.py loads it).
 *
 * Attached to tc egress of the router's interface towards the real servers (direct action). The
 * router's own route picks the real server (ECMP, or the iperf3 rule to rs1) and so the frame's
 * destination MAC; a frame for the VIP whose destination MAC is in `tunnel_peers` leaves
 * encapsulated as a kernel tunnel to that real server would send it: outer IPv4 router -> RIP, then
 * nothing (ipip), UDP + a 4-byte GUE header version 0 (GUE) or a 4-byte GRE header (GRE). The room
 * is made with BPF_F_ADJ_ROOM_ENCAP_* so a GSO super-frame stays whole, marked as tunnel GSO, with
 * the inner MSS (FIXED_GSO): its segments fit because the router's VIP routes carry the tunnels'
 * MTU (routedlab.py). Everything else passes untouched.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/pkt_cls.h>
#include <linux/udp.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#define IP_DF 0x4000
#define GUE_LEN (8 + 4) /* UDP header + GUE header without options */
#define GRE_LEN 4       /* GRE without checksum, key or sequence number */
#define PORT_LO 32768   /* the GUE source port comes from the flow hash, in ip_local_port_range */
#define PORT_HI 60999

enum tunnel_kind { TUNNEL_IPIP = 1, TUNNEL_GUE = 2, TUNNEL_GRE = 3 };

struct peer_key {
	__u8 mac[ETH_ALEN]; /* the real server's, as the router's neighbour entry has it */
	__u16 pad;
};

struct peer {
	__be32 vip;      /* only packets to this address are tunnelled */
	__be32 saddr;    /* outer source: the router's address towards the real servers */
	__be32 daddr;    /* outer destination: the RIP */
	__be16 gue_port; /* GUE's UDP destination port */
	__u8 kind;       /* enum tunnel_kind */
	__u8 pad;
};

/* Which way each frame went: read by the bench (tunnel_router.py COUNTERS). */
enum counter { CNT_ENCAPSULATED = 0, CNT_PASSED, CNT_FAILED, CNT_MAX };

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16);
	__type(key, struct peer_key);
	__type(value, struct peer);
} tunnel_peers SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, CNT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} tunnel_counters SEC(".maps");

struct outer {
	struct iphdr ip;
	union {
		struct {
			struct udphdr udp;
			__u8 gue[4];
		};
		__u8 gre[4];
	};
};

static __always_inline int count(__u32 index, int verdict)
{
	__u64 *n = bpf_map_lookup_elem(&tunnel_counters, &index);

	if (n)
		*n += 1;
	return verdict;
}

static __always_inline __u16 header_checksum(const struct iphdr *ip)
{
	const __u16 *w = (const __u16 *)ip;
	__u32 sum = 0;

#pragma unroll
	for (int i = 0; i < 10; i++)
		sum += w[i];
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return ~sum;
}

SEC("tc")
int tunnel_router(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip = data + ETH_HLEN;
	struct peer_key key = {};
	struct outer h = {};
	struct peer *p;
	__u64 flags = BPF_F_ADJ_ROOM_FIXED_GSO | BPF_F_ADJ_ROOM_ENCAP_L3_IPV4;
	__u32 extra = 20, len;
	__u16 tot;

	if ((void *)(ip + 1) > end || eth->h_proto != bpf_htons(ETH_P_IP))
		return count(CNT_PASSED, TC_ACT_OK);
	__builtin_memcpy(key.mac, eth->h_dest, ETH_ALEN);
	p = bpf_map_lookup_elem(&tunnel_peers, &key);
	if (!p || ip->daddr != p->vip)
		return count(CNT_PASSED, TC_ACT_OK);
	tot = bpf_ntohs(ip->tot_len);
	h.ip.version = 4;
	h.ip.ihl = 5;
	/* DSCP and ECT copied, CE becomes ECT(0) outside (INET_ECN_encapsulate) */
	h.ip.tos = (ip->tos & 3) == 3 ? (ip->tos & ~3) | 2 : ip->tos;
	h.ip.ttl = ip->ttl;
	/* DF as the inner packet has it; with DF the ID is 0 (GSO segments count up from it), as a kernel
	 * tunnel's. */
	h.ip.frag_off = ip->frag_off & bpf_htons(IP_DF);
	h.ip.id = h.ip.frag_off ? 0 : (__u16)bpf_get_prandom_u32();
	h.ip.saddr = p->saddr;
	h.ip.daddr = p->daddr;
	if (p->kind == TUNNEL_GUE) {
		extra += GUE_LEN;
		flags |= BPF_F_ADJ_ROOM_ENCAP_L4_UDP;
		h.ip.protocol = IPPROTO_UDP;
		h.udp.source = bpf_htons(PORT_LO + (((__u64)bpf_get_hash_recalc(skb) * (PORT_HI - PORT_LO)) >> 32));
		h.udp.dest = p->gue_port;
		h.udp.len = bpf_htons(tot + GUE_LEN); /* checksum 0: none */
		h.gue[1] = IPPROTO_IPIP;             /* version 0, hlen 0, proto_ctype 4, flags 0 */
	} else if (p->kind == TUNNEL_GRE) {
		extra += GRE_LEN;
		flags |= BPF_F_ADJ_ROOM_ENCAP_L4_GRE;
		h.ip.protocol = IPPROTO_GRE;
		h.gre[2] = 0x08; /* no C/K/S bits, version 0, protocol 0x0800 */
	} else {
		h.ip.protocol = IPPROTO_IPIP;
	}
	if (tot + extra > 0xffff) /* no outer length for it (a GSO frame stays below 64 KiB) */
		return count(CNT_FAILED, TC_ACT_SHOT);
	h.ip.tot_len = bpf_htons(tot + extra);
	h.ip.check = header_checksum(&h.ip);
	if (bpf_skb_adjust_room(skb, extra, BPF_ADJ_ROOM_MAC, flags))
		return count(CNT_FAILED, TC_ACT_SHOT);
	len = extra;
	if (len > sizeof(h)) /* for the verifier: the header written comes from h */
		return count(CNT_FAILED, TC_ACT_SHOT);
	if (bpf_skb_store_bytes(skb, ETH_HLEN, &h, len, 0))
		return count(CNT_FAILED, TC_ACT_SHOT);
	return count(CNT_ENCAPSULATED, TC_ACT_OK);
}

char LICENSE[] SEC("license") = "GPL";
