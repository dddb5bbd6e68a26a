/* Kernel scheduling of new TCP connections for mh, sh, dh, rr and wrr services, IPv4 and IPv6.
 *
 * Included by pylvs_fastpath.bpf.c after its helpers. For a SYN to a service the engine published
 * (pylvs/datapath/bpf/ksched.py), the program picks the real server itself from the scheduler's
 * lookup table, hashing exactly as the kernel's ip_vs_mh / ip_vs_sh / ip_vs_dh do (an IPv6 address
 * folded to the XOR of its four 32-bit words first); for rr and wrr the table is one period of the
 * scheduler's sequence of choices and a per-service cursor, advanced atomically, walks it (ks_next;
 * CREATED reports the cursor value so the engine's scheduler follows). It creates the connection's
 * flow entries from the destination's recipe template (the client's address and port filled in;
 * NAT's reply entry leaves where the SYN came from) in the state the SYN makes (NONE -> SYN_RECV,
 * which CREATED stands for: one event per new connection, not two), reports a CREATED event
 * on the event ring and lets the fast path forward the SYN by the new entry. FULLNAT (IPv4, not under
 * the PROXY protocol; TOA the fast path inserts itself): the program also takes a local address and
 * port and claims it by creating the reply entry with BPF_NOEXIST (ks_claim); CREATED names them. The engine
 * adopts the connection from the event (Engine.adopt_kernel), so it stays the authority. IPv6 SYNs come from
 * pylvs_fastpath6 (no extension header) and go on into it: NAT66, DR, IPv6 in IPv6 and GRE over IPv6.
 * The keys and entries being built live in a per-CPU scratch map, not on the program's stack.
 *
 * Everything the engine must decide is punted unchanged (a counter per reason): services it did not
 * publish or marked engine-only (persistent, FULLNAT under the PROXY protocol, synproxy, defence
 * strategies, thresholds, ...), a table that changed and is not republished yet (the generation in pylvs_ksched_state), a SYN whose
 * connection already has an entry (connection reuse), a destination the table names but that may not
 * take it (weight 0, unavailable) once the kernel's fallback probes run out, an rr/wrr sequence longer
 * than the table, a destination whose recipe the fast path of the SYN's family would not execute
 * (overhead_of, overhead6_of; IPv6 FULLNAT), a full ring, FULLNAT local ports all taken in the probes.
 */
#ifndef PYLVS_SCHED_BPF_H
#define PYLVS_SCHED_BPF_H

#define KSCHED_MH 1
#define KSCHED_SH 2
#define KSCHED_DH 3
#define KSCHED_SEQ 4                /* rr, wrr: the table is the sequence of choices, a cursor walks it */
#define KSCHED_TAB_MAX 4096         /* mh: 4093 slots (CONFIG_IP_VS_MH_TAB_INDEX 12); sh, dh: 256 */
#define KSCHED_MH_SIZE 4093
#define KSCHED_HASH_SIZE 256
#define KSCHED_NO_DEST 0xffff
#define KSCHED_PROBES 16            /* fallback probes made here; the engine makes the rest */
#define KSCHED_LADDRS 16            /* FULLNAT: the local addresses (IPv4) a service publishes, at most */
#define KSCHED_LPORT_PROBES 8       /* FULLNAT: local ports tried before the SYN is punted */
#define KSCHED_SVC_F_ENGINE 0x01    /* every SYN of this service is the engine's */
#define KSCHED_SVC_F_FALLBACK 0x02  /* mh-fallback / sh-fallback (IP_VS_SVC_F_SCHED1) */
#define KSCHED_SVC_F_PORT 0x04      /* mh-port / sh-port (IP_VS_SVC_F_SCHED2) */
#define KSCHED_DEST_F_USABLE 0x01   /* weight > 0, available, not overloaded */
#define KSCHED_DEST_F_ENGINE 0x02   /* the engine decides (thresholds, no hop yet, a recipe not here) */
#define KSCHED_CONTINUE 0           /* the SYN goes on into the fast path (it has an entry now) */
#define KSCHED_PUNT -1              /* to the engine, unchanged */
#define KSCHED_HASH1 2654435761ULL  /* ip_vs_mh's fixed hsiphash keys: key[0] == key[1] */

/* Per-CPU counters (pylvs/datapath/bpf/ksched.py COUNTERS mirrors the names). */
enum pylvs_ksched_counter {
	KS_CREATED = 0,     /* scheduled here: entries made, CREATED reported */
	KS_SYNACK,          /* a SYN+ACK let through to the fast path's entries */
	KS_PUNT_OFF,        /* nothing published (switched off, or a publication under way) */
	KS_PUNT_FLAGS,      /* SYN with RST or FIN, TTL <= 1: the engine's */
	KS_PUNT_EXISTING,   /* an entry for this tuple exists: connection reuse is the engine's */
	KS_PUNT_NO_SERVICE, /* no published service (not ours) */
	KS_PUNT_SERVICE,    /* the service is the engine's (persistent, synproxy, ...) */
	KS_PUNT_STALE,      /* published under an older generation */
	KS_PUNT_NO_DEST,    /* the table has nobody there, or the fallback probes ran out */
	KS_PUNT_DEST,       /* the destination is the engine's, or its recipe is not this fast path's */
	KS_PUNT_RING,       /* no room on the event ring */
	KS_PUNT_COLLISION,  /* the reply entry's tuple is taken */
	KS_PUNT_LONG,       /* rr, wrr: the sequence is longer than the table (wrr's sum of weights / gcd) */
	KS_PUNT_LPORT,      /* FULLNAT: every local port probed was taken (or no local address published) */
	KS_MAX,
};

struct pylvs_ksched_state {
	__u32 gen;        /* the current publication; 0: every SYN goes to the engine */
	__u32 pad;
};

struct pylvs_ksched_svc_key {
	__u8 family;      /* AF_INET, AF_INET6 */
	__u8 proto;
	__be16 vport;
	__u8 vaddr[16];   /* IPv4 mapped, as in flow keys */
};

struct pylvs_ksched_svc {
	__u32 gen;        /* the publication this record belongs to */
	__u32 slot;       /* its table in pylvs_ksched_tables, its destinations' key */
	__u8 sched;       /* KSCHED_MH, _SH, _DH, _SEQ */
	__u8 flags;       /* KSCHED_SVC_F_* */
	__u16 length;     /* KSCHED_SEQ: the sequence's length; 0: longer than the table (punted) */
};

struct pylvs_ksched_table {
	__u16 dest[KSCHED_TAB_MAX]; /* destination index per slot, KSCHED_NO_DEST where nobody */
};

struct pylvs_ksched_dest_key {
	__u32 slot;
	__u32 index;
};

struct pylvs_ksched_dest {
	__u32 flags;      /* KSCHED_DEST_F_* */
	__be16 rport;     /* the real server's port as the reply entry's key has it */
	__u16 pad;
	__u8 raddr[16];   /* IPv4 mapped */
	__u32 index;      /* its index in the service's destinations, reported with CREATED */
	__u32 pad2;
	struct pylvs_flow_value in;  /* client -> real server; the client's address and port filled in */
	struct pylvs_flow_value out; /* NAT: replies; the client's address and port and the hop filled in */
};

struct pylvs_ksched_iface {
	__u8 mac[6];
	__u16 mtu;
};

/* CREATED: a pylvs_flow_event (the SYN's change, NONE -> SYN_RECV) and what the engine adopts it with. */
struct pylvs_ksched_event {
	struct pylvs_flow_event flow;
	__u32 gen;
	__u32 slot;
	__u32 dest;
	__u8 raddr[16];   /* IPv4 mapped */
	__be16 rport;
	__u8 hw[6];       /* NAT: the SYN's source MAC and its interface, where the reply entry sends to */
	__u32 ifindex;
	__u64 cursor;     /* KSCHED_SEQ: the cursor's value taken (the table's entry cursor % length) */
	__be32 laddr;     /* FULLNAT: the local address and port taken (0: not FULLNAT); CREATED's size */
	__be16 lport;     /* (112) stays apart from RETIRED's (104) */
	__u16 pad;
};

/* FULLNAT: a service's local addresses and the range of their ports (the engine claims its own ports
 * in the map too, so the two share the whole range), by slot. */
struct pylvs_ksched_laddrs {
	__u32 count;      /* addresses in addr; 0: the service's FULLNAT SYNs are punted */
	__u16 lport_min;  /* ports [lport_min, lport_min + lport_span) */
	__u16 lport_span;
	__be32 addr[KSCHED_LADDRS];
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct pylvs_ksched_state);
} pylvs_ksched_state SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, struct pylvs_ksched_svc_key);
	__type(value, struct pylvs_ksched_svc);
} pylvs_ksched_svcs SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 256);
	__type(key, __u32);
	__type(value, struct pylvs_ksched_table);
} pylvs_ksched_tables SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, struct pylvs_ksched_dest_key);
	__type(value, struct pylvs_ksched_dest);
} pylvs_ksched_dests SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 256);
	__type(key, __u32);
	__type(value, struct pylvs_ksched_iface);
} pylvs_ksched_ifaces SEC(".maps");

/* KSCHED_SEQ: per slot, how many choices were taken from its sequence since it was published (the
 * engine writes 0 with each new sequence; the next choice is table[cursor % length]). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 256);
	__type(key, __u32);
	__type(value, __u64);
} pylvs_ksched_cursors SEC(".maps");

/* What scheduling a SYN builds: the connection's keys and entries, too big for the program's 512 bytes
 * of stack beside the fast path's own. One per CPU: tc ingress runs with bottom halves off, so one run
 * of the program at a time uses it, from the SYN's arrival to the entries' insertion. */
struct pylvs_ksched_scratch {
	struct pylvs_flow_value in;
	struct pylvs_flow_value out;
	struct pylvs_flow_key key;  /* the SYN's, the in entry's */
	struct pylvs_flow_key rkey; /* NAT: the out entry's */
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct pylvs_ksched_scratch);
} pylvs_ksched_scratch SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 256);
	__type(key, __u32);
	__type(value, struct pylvs_ksched_laddrs);
} pylvs_ksched_laddrs SEC(".maps");

/* FULLNAT: per slot and real server (key slot << 16 | destination index), the local (address, port)
 * pairs handed out so far: pair c is address c % count, port lport_min + (c / count) % lport_span.
 * Per real server because its reply tuples (LIP:lport -> RIP:rport) must not come round within its
 * TIME_WAIT: one cursor for the service took a pair back to the same real server after a third of the
 * cycle with three of them (the real server refused the reused tuple). Starts at a random value and
 * is never reset: any value is a valid place to go on from (the claims skip the pairs still held). */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u32);
	__type(value, __u64);
} pylvs_ksched_lcursors SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, KS_MAX);
	__type(key, __u32);
	__type(value, __u64);
} pylvs_ksched_counters SEC(".maps");

static __always_inline int ks_count(__u32 index, int verdict)
{
	__u64 *c = bpf_map_lookup_elem(&pylvs_ksched_counters, &index);

	if (c)
		*c += 1;
	return verdict;
}

#define KS_ROTL(x, b) (((x) << (b)) | ((x) >> (64 - (b))))
#define KS_SIPROUND                                                                   \
	do {                                                                          \
		v0 += v1; v1 = KS_ROTL(v1, 13); v1 ^= v0; v0 = KS_ROTL(v0, 32);       \
		v2 += v3; v3 = KS_ROTL(v3, 16); v3 ^= v2;                             \
		v0 += v3; v3 = KS_ROTL(v3, 21); v3 ^= v0;                             \
		v2 += v1; v1 = KS_ROTL(v1, 17); v1 ^= v2; v2 = KS_ROTL(v2, 32);       \
	} while (0)

/* The kernel's hsiphash_1u32 on 64-bit machines (SipHash-1-3, 32-bit result), under ip_vs_mh's
 * first fixed key (pylvs/sched/_maglev.c is the same function for the engine). */
static __always_inline __u32 ks_hsiphash1(__u32 value)
{
	__u64 v0 = 0x736f6d6570736575ULL ^ KSCHED_HASH1, v1 = 0x646f72616e646f6dULL ^ KSCHED_HASH1;
	__u64 v2 = 0x6c7967656e657261ULL ^ KSCHED_HASH1, v3 = 0x7465646279746573ULL ^ KSCHED_HASH1;
	__u64 b = ((__u64)4 << 56) | value;

	v3 ^= b;
	KS_SIPROUND;
	v0 ^= b;
	v2 ^= 0xff;
	KS_SIPROUND;
	KS_SIPROUND;
	KS_SIPROUND;
	return (__u32)(v0 ^ v1 ^ v2 ^ v3);
}

/* include/linux/hash.h hash_32(val, 8) */
static __always_inline __u32 ks_hash_32_8(__u32 val)
{
	return (val * 0x61C88647u) >> 24;
}

/* GUE's outer UDP source port for a connection the program makes: a hash of the client's address
 * (host order) and of both ports, scaled into 32768-60999 as udp_flow_src_port scales the flow hash
 * (pylvs/datapath/bpf/adopt.py gue_source_port is the same for the engine's copy of the recipe). */
#define KS_GUE_PORT_LO 32768
#define KS_GUE_PORT_HI 60999
static __always_inline __be16 ks_gue_sport(__u32 saddr, __be16 sport, __be16 dport)
{
	__u32 h = ks_hsiphash1(saddr ^ ((__u32)bpf_ntohs(sport) << 16 | bpf_ntohs(dport)));

	h ^= h << 16;
	return bpf_htons((__u16)((((__u64)h * (KS_GUE_PORT_HI - KS_GUE_PORT_LO)) >> 32) + KS_GUE_PORT_LO));
}

/* t->dest[i], or KSCHED_NO_DEST out of range: the bound the compiler proves is not the verifier's. */
static __always_inline __u16 ks_slot(const struct pylvs_ksched_table *t, __u32 i)
{
	asm volatile("" : "+r"(i));
	if (i >= KSCHED_TAB_MAX)
		return KSCHED_NO_DEST;
	return t->dest[i];
}

static __always_inline struct pylvs_ksched_dest *ks_dest(__u32 slot, __u16 index)
{
	struct pylvs_ksched_dest_key k = { .slot = slot, .index = index };

	if (index == KSCHED_NO_DEST)
		return NULL;
	return bpf_map_lookup_elem(&pylvs_ksched_dests, &k);
}

/* rr, wrr: the sequence's next entry. Two CPUs take consecutive cursor values, so the choices are
 * the sequence's, in the order of the atomic adds (the kernel's ip_vs_rr/wrr take a spinlock). */
static __always_inline struct pylvs_ksched_dest *ks_next(const struct pylvs_ksched_svc *svc,
							 const struct pylvs_ksched_table *t, __u64 *cursor)
{
	__u32 slot = svc->slot;
	__u64 *c = bpf_map_lookup_elem(&pylvs_ksched_cursors, &slot);
	__u32 length = svc->length;

	if (!c || !length)
		return NULL;
	*cursor = __sync_fetch_and_add(c, 1);
	return ks_dest(slot, ks_slot(t, *cursor % length));
}

/* The scheduler's choice for (client address, port), as ip_vs_{mh,sh,dh}_schedule: the slot's
 * destination, or with the fallback flag the kernel's probe sequence up to KSCHED_PROBES probes;
 * rr, wrr: the sequence's next entry (ks_next, its cursor value in *cursor).
 * NULL: the engine decides (nobody there, nobody usable in the probes made here). */
static __always_inline struct pylvs_ksched_dest *ks_pick(const struct pylvs_ksched_svc *svc,
							 const struct pylvs_ksched_table *t, __u32 saddr,
							 __u32 daddr, __u16 sport, __u64 *cursor)
{
	struct pylvs_ksched_dest *d;
	__u32 port = svc->flags & KSCHED_SVC_F_PORT ? sport : 0;
	__u32 ihash, idx, size;

	if (svc->sched == KSCHED_SEQ)
		return ks_next(svc, t, cursor);
	if (svc->sched == KSCHED_MH) {
		size = KSCHED_MH_SIZE;
		ihash = ks_hsiphash1(port + saddr) % KSCHED_MH_SIZE;
	} else if (svc->sched == KSCHED_SH) {
		size = KSCHED_HASH_SIZE;
		ihash = ks_hash_32_8(port + saddr);
	} else {
		size = KSCHED_HASH_SIZE;
		ihash = ks_hash_32_8(daddr);
	}
	d = ks_dest(svc->slot, ks_slot(t, ihash));
	if (!d || d->flags & KSCHED_DEST_F_USABLE || svc->sched == KSCHED_DH || !(svc->flags & KSCHED_SVC_F_FALLBACK))
		return d;
	for (__u32 offset = 0; offset < KSCHED_PROBES && offset < size; offset++) {
		__u32 roffset = (offset + ihash) % size;

		if (svc->sched == KSCHED_MH)
			idx = ks_hsiphash1(roffset + port + saddr) % KSCHED_MH_SIZE;
		else
			idx = (roffset + ihash) & (KSCHED_HASH_SIZE - 1);
		d = ks_dest(svc->slot, ks_slot(t, idx));
		if (!d || d->flags & KSCHED_DEST_F_USABLE)
			return d;
	}
	return NULL;
}

/* The one's-complement sum of an IPv4 address's two words, and a sum's negation (delta = new + ~old). */
static __always_inline __u32 ks_sum4(const __u8 *a)
{
	return ((__u32)a[0] << 8 | a[1]) + ((__u32)a[2] << 8 | a[3]);
}

static __always_inline __u32 ks_neg(__u32 sum)
{
	return 0xffff - fold(sum);
}

/* FULLNAT: take a local address and port for the connection in `s` (its SYN's key, the entries from
 * the templates, which were made with the unspecified local address and port 0): claimed by creating
 * the reply entry (LIP:lport is its key's destination) with BPF_NOEXIST, so neither another CPU nor a
 * connection the engine made can hold it; a taken one, the next pair, up to KSCHED_LPORT_PROBES. The
 * checksum deltas get the client's and the local address and port's part. 0: claimed, the request entry
 * filled in and *laddr, *lport set; -1: nothing claimed. */
static __always_inline int ks_claim(struct pylvs_ksched_scratch *s, __u32 slot, __u32 dest, __be32 *laddr,
				    __be16 *lport)
{
	struct pylvs_ksched_laddrs *la = bpf_map_lookup_elem(&pylvs_ksched_laddrs, &slot);
	__u32 ckey = slot << 16 | (dest & 0xffff);
	__u64 start, *cursor = bpf_map_lookup_elem(&pylvs_ksched_lcursors, &ckey);
	struct pylvs_flow_value *in = &s->in, *out = &s->out;
	__u32 client = ks_sum4(&s->key.saddr[12]), cport = bpf_ntohs(s->key.sport);
	__u32 ip = out->csum_ip, l4 = out->csum_l4, partial = out->csum_l4_partial;
	__u32 n, span;

	if (!cursor) { /* a random start: not the low ports the engine's cursors (and a restart's) begin with */
		start = bpf_get_prandom_u32();
		bpf_map_update_elem(&pylvs_ksched_lcursors, &ckey, &start, BPF_NOEXIST);
		cursor = bpf_map_lookup_elem(&pylvs_ksched_lcursors, &ckey);
	}
	if (!la || !cursor || !la->count || !la->lport_span)
		return -1;
	n = la->count < KSCHED_LADDRS ? la->count : KSCHED_LADDRS;
	span = la->lport_span;
	for (int i = 0; i < KSCHED_LPORT_PROBES; i++) {
		__u64 c = __sync_fetch_and_add(cursor, 1);
		__u32 idx = c % n, port = la->lport_min + (__u32)((c / n) % span), local, addrs;
		__be32 lip;

		asm volatile("" : "+r"(idx));
		lip = la->addr[idx & (KSCHED_LADDRS - 1)];
		local = ks_sum4((const __u8 *)&lip);
		__builtin_memcpy(&s->rkey.daddr[12], &lip, 4);
		s->rkey.dport = bpf_htons(port);
		addrs = client + ks_neg(local); /* replies: LIP -> CIP, lport -> cport */
		out->csum_ip = fold(ip + addrs);
		out->csum_l4_partial = fold(partial + addrs);
		out->csum_l4 = fold(l4 + addrs + cport + ks_neg(port));
		if (bpf_map_update_elem(&pylvs_flows, &s->rkey, out, BPF_NOEXIST))
			continue;
		addrs = local + ks_neg(client); /* requests: CIP -> LIP, cport -> lport */
		__builtin_memcpy(&in->new_saddr[12], &lip, 4);
		in->new_sport = bpf_htons(port);
		in->csum_ip = fold(in->csum_ip + addrs);
		in->csum_l4_partial = fold(in->csum_l4_partial + addrs);
		in->csum_l4 = fold(in->csum_l4 + addrs + port + ks_neg(cport));
		*laddr = lip;
		*lport = bpf_htons(port);
		return 0;
	}
	return -1;
}

static __always_inline __u32 ks_gen(void)
{
	__u32 zero = 0;
	struct pylvs_ksched_state *s = bpf_map_lookup_elem(&pylvs_ksched_state, &zero);

	return s ? s->gen : 0;
}

static __always_inline struct pylvs_ksched_scratch *ks_scratch(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&pylvs_ksched_scratch, &zero);
}

/* A segment with SYN: the scratch to schedule a new connection's SYN in, or NULL with *verdict set
 * (counted). */
static __always_inline struct pylvs_ksched_scratch *ks_begin(const struct tcphdr *th, __u8 ttl, __u32 gen,
							      int *verdict)
{
	struct pylvs_ksched_scratch *s;

	if (th->ack && !th->rst && !th->fin) { /* whoever scheduled it: its entries may be there since the SYN */
		*verdict = ks_count(KS_SYNACK, KSCHED_CONTINUE);
	} else if (!gen) {
		*verdict = ks_count(KS_PUNT_OFF, KSCHED_PUNT);
	} else if (th->ack || th->rst || th->fin || ttl <= 1) {
		*verdict = ks_count(KS_PUNT_FLAGS, KSCHED_PUNT);
	} else {
		s = ks_scratch();
		if (s)
			return s;
		*verdict = ks_count(KS_PUNT_OFF, KSCHED_PUNT);
	}
	return NULL;
}

/* A new connection's SYN, its key (client, VIP, ports) in s->key: scheduled, its entries made and
 * CREATED reported (KSCHED_CONTINUE), or punted. `saddr` and `daddr` are the client and the VIP as the
 * kernel's hash keys take them (host order; IPv6 folded). */
static __always_inline int ks_schedule(struct __sk_buff *skb, struct ethhdr *eth, struct pylvs_ksched_scratch *s,
				       __u32 gen, __u32 saddr, __u32 daddr)
{
	struct pylvs_ksched_svc_key skey = {};
	struct pylvs_flow_value *in = &s->in, *out = &s->out;
	struct pylvs_flow_key *key = &s->key, *rkey = &s->rkey;
	struct pylvs_ksched_event *ev;
	struct pylvs_ksched_svc *svc;
	struct pylvs_ksched_table *t;
	struct pylvs_ksched_dest *d;
	struct pylvs_ksched_iface *iface = NULL;
	__u32 ingress = skb->ifindex;
	__u64 cursor = 0;
	__be32 laddr = 0;
	__be16 lport = 0;
	int fullnat;

	if (bpf_map_lookup_elem(&pylvs_flows, key))
		return ks_count(KS_PUNT_EXISTING, KSCHED_PUNT);
	/* ip_vs_service_find: VIP:port, then VIP:0 (the engine publishes every TCP service). */
	skey.family = key->family;
	skey.proto = IPPROTO_TCP;
	skey.vport = key->dport;
	__builtin_memcpy(skey.vaddr, key->daddr, 16);
	svc = bpf_map_lookup_elem(&pylvs_ksched_svcs, &skey);
	if (!svc) {
		skey.vport = 0;
		svc = bpf_map_lookup_elem(&pylvs_ksched_svcs, &skey);
	}
	if (!svc)
		return ks_count(KS_PUNT_NO_SERVICE, KSCHED_PUNT);
	if (svc->flags & KSCHED_SVC_F_ENGINE)
		return ks_count(KS_PUNT_SERVICE, KSCHED_PUNT);
	if (svc->gen != gen)
		return ks_count(KS_PUNT_STALE, KSCHED_PUNT);
	if (svc->sched == KSCHED_SEQ && !svc->length)
		return ks_count(KS_PUNT_LONG, KSCHED_PUNT);
	t = bpf_map_lookup_elem(&pylvs_ksched_tables, &svc->slot);
	if (!t)
		return ks_count(KS_PUNT_SERVICE, KSCHED_PUNT);
	d = ks_pick(svc, t, saddr, daddr, bpf_ntohs(key->sport), &cursor);
	if (!d || !(d->flags & KSCHED_DEST_F_USABLE))
		return ks_count(KS_PUNT_NO_DEST, KSCHED_PUNT);
	/* What the fast path of the SYN's family would not execute stays the engine's. */
	fullnat = d->in.method == FLOW_METHOD_FULLNAT;
	if (d->flags & KSCHED_DEST_F_ENGINE || (fullnat && key->family != AF_INET) ||
	    (key->family == AF_INET6 ? overhead6_of(&d->in) : overhead_of(&d->in)) < 0)
		return ks_count(KS_PUNT_DEST, KSCHED_PUNT);
	/* The templates' client is :: (IPv6) or ::ffff:0.0.0.0 (IPv4): the key's address fits either. */
	*in = d->in;
	__builtin_memcpy(in->new_saddr, key->saddr, 16);
	in->new_sport = key->sport;
	if (in->encap == FLOW_ENCAP_GUE)
		in->encap_sport = ks_gue_sport(saddr, key->sport, key->dport);
	in->tcp_state = PYLVS_TCP_S_SYN_RECV; /* the SYN's change, reported as CREATED */
	in->tcp_flags = 0;
	in->transitions = 1;
	in->packets = in->bytes = in->last_seen_ns = 0;
	if (in->method == FLOW_METHOD_MASQ || fullnat) {
		/* Replies go back the way the SYN came: its interface, its sender's MAC (FULLNAT: their key's
		 * destination and the rewrites' local part are ks_claim's). */
		iface = bpf_map_lookup_elem(&pylvs_ksched_ifaces, &ingress);
		if (!iface)
			return ks_count(KS_PUNT_DEST, KSCHED_PUNT);
		*out = d->out;
		__builtin_memcpy(out->new_daddr, key->saddr, 16);
		out->new_dport = key->sport;
		out->ifindex = ingress;
		__builtin_memcpy(out->dmac, eth->h_source, ETH_ALEN);
		__builtin_memcpy(out->smac, iface->mac, ETH_ALEN);
		out->mtu = iface->mtu;
		out->tcp_state = PYLVS_TCP_S_SYN_RECV;
		out->tcp_flags = 0;
		out->transitions = 0;
		out->packets = out->bytes = out->last_seen_ns = 0;
		rkey->family = key->family;
		rkey->proto = IPPROTO_TCP;
		rkey->pad = 0;
		__builtin_memcpy(rkey->saddr, d->in.new_daddr, 16);
		__builtin_memcpy(rkey->daddr, key->saddr, 16);
		rkey->sport = d->rport;
		rkey->dport = key->sport;
	}
	ev = bpf_ringbuf_reserve(&pylvs_events, sizeof(*ev), 0);
	if (!ev)
		return ks_count(KS_PUNT_RING, KSCHED_PUNT);
	if (fullnat && ks_claim(s, svc->slot, d->index, &laddr, &lport)) {
		bpf_ringbuf_discard(ev, BPF_RB_NO_WAKEUP);
		return ks_count(KS_PUNT_LPORT, KSCHED_PUNT);
	}
	if (bpf_map_update_elem(&pylvs_flows, key, in, BPF_NOEXIST)) {
		if (fullnat)
			bpf_map_delete_elem(&pylvs_flows, rkey);
		bpf_ringbuf_discard(ev, BPF_RB_NO_WAKEUP);
		return ks_count(KS_PUNT_EXISTING, KSCHED_PUNT);
	}
	if (iface && !fullnat && bpf_map_update_elem(&pylvs_flows, rkey, out, BPF_NOEXIST)) {
		bpf_map_delete_elem(&pylvs_flows, key);
		bpf_ringbuf_discard(ev, BPF_RB_NO_WAKEUP);
		return ks_count(KS_PUNT_COLLISION, KSCHED_PUNT);
	}
	if (ks_gen() != gen) { /* republished meanwhile: the table read may be half old, half new */
		bpf_map_delete_elem(&pylvs_flows, key);
		if (iface)
			bpf_map_delete_elem(&pylvs_flows, rkey);
		bpf_ringbuf_discard(ev, BPF_RB_NO_WAKEUP);
		return ks_count(KS_PUNT_STALE, KSCHED_PUNT);
	}
	__builtin_memset(ev, 0, sizeof(*ev));
	ev->flow.ts_ns = bpf_ktime_get_ns();
	ev->flow.key = *key;
	ev->flow.tcp_flags = TH_SYN;
	ev->flow.direction = FLOW_DIR_IN;
	ev->flow.new_state = PYLVS_TCP_S_SYN_RECV;
	ev->flow.transitions = 1;
	ev->gen = gen;
	ev->slot = svc->slot;
	ev->dest = d->index;
	__builtin_memcpy(ev->raddr, d->raddr, 16);
	ev->rport = d->rport;
	ev->cursor = cursor;
	ev->laddr = laddr;
	ev->lport = lport;
	if (iface) {
		__builtin_memcpy(ev->hw, eth->h_source, ETH_ALEN);
		ev->ifindex = ingress;
	}
	bpf_ringbuf_submit(ev, event_wakeup());
	return ks_count(KS_CREATED, KSCHED_CONTINUE);
}

/* A TCP segment with SYN, before the fast path's flow lookup. KSCHED_CONTINUE: it goes on into the
 * fast path (a SYN+ACK, executed by an entry if there is one; a new connection's SYN, by the entry just
 * made); KSCHED_PUNT: the engine's, as every SYN was before. */
static __always_inline int pylvs_ksched_syn(struct __sk_buff *skb, struct ethhdr *eth, struct iphdr *ip,
					    struct tcphdr *th)
{
	__u32 gen = ks_gen();
	int verdict;
	struct pylvs_ksched_scratch *s = ks_begin(th, ip->ttl, gen, &verdict);

	if (!s)
		return verdict;
	__builtin_memset(&s->key, 0, sizeof(s->key));
	s->key.family = AF_INET;
	s->key.proto = IPPROTO_TCP;
	s->key.saddr[10] = s->key.saddr[11] = s->key.daddr[10] = s->key.daddr[11] = 0xff;
	__builtin_memcpy(&s->key.saddr[12], &ip->saddr, 4);
	__builtin_memcpy(&s->key.daddr[12], &ip->daddr, 4);
	s->key.sport = th->source;
	s->key.dport = th->dest;
	return ks_schedule(skb, eth, s, gen, bpf_ntohl(ip->saddr), bpf_ntohl(ip->daddr));
}

/* ip_vs_{mh,sh,dh}_hashkey's IPv6 address: its four 32-bit words XORed, in host order. */
static __always_inline __u32 ks_fold6(const struct in6_addr *a)
{
	return bpf_ntohl(a->in6_u.u6_addr32[0] ^ a->in6_u.u6_addr32[1] ^ a->in6_u.u6_addr32[2] ^
			 a->in6_u.u6_addr32[3]);
}

/* The same for IPv6 (pylvs_fastpath6: no extension header, hop limit as the TTL). */
static __always_inline int pylvs_ksched_syn6(struct __sk_buff *skb, struct ethhdr *eth, struct ipv6hdr *ip6,
					     struct tcphdr *th)
{
	__u32 gen = ks_gen();
	int verdict;
	struct pylvs_ksched_scratch *s = ks_begin(th, ip6->hop_limit, gen, &verdict);

	if (!s)
		return verdict;
	s->key.family = AF_INET6;
	s->key.proto = IPPROTO_TCP;
	s->key.pad = 0;
	__builtin_memcpy(s->key.saddr, &ip6->saddr, 16);
	__builtin_memcpy(s->key.daddr, &ip6->daddr, 16);
	s->key.sport = th->source;
	s->key.dport = th->dest;
	return ks_schedule(skb, eth, s, gen, ks_fold6(&ip6->saddr), ks_fold6(&ip6->daddr));
}

#endif
