// SPDX-License-Identifier: GPL-2.0 OR MIT
/*
 * Per-service external traffic counter for stb-netacct.
 *
 * Attach points: cgroup_skb/ingress and cgroup_skb/egress, linked at each service cgroup
 * (bpf/cgroup_links.ts), so only StB's sockets run this program; other cgroups' packets
 * never do. A service cgroup that appears late or is recreated (service restart: new id)
 * gets its id written into the config and is then linked, by userspace, as soon as the
 * cgroup watch sees it. BPF links, not legacy attachments: they end with their last
 * holder, and only a kept (pinned) link outlives the sampler.
 *
 * Per packet: loopback interface, or one of `skip_ifs` (config exclude_interfaces) ->
 * ignore; the socket's ancestor cgroup at each target
 * level (bpf_skb_ancestor_cgroup_id) is compared with the exact target ids of its bucket
 * in the active config slot: one global read, one inlined array lookup, no hash map (a
 * hash lookup cost twice the rest of the uncounted path); the deepest target wins, so a
 * nested service's packets count for it. No match (a cgroup below a link that no longer
 * is a target, for a moment) -> done. Else the remote address (source on ingress,
 * destination on egress; IPv4-mapped IPv6 as IPv4) is judged internal or external: by its
 * first 16 bits alone from the `verdicts` table (65536 entries per family, written once
 * at start, rewritten when on-link prefixes change), unless an excluded prefix longer than /16 starts with them and no shorter
 * one holds them all (of the defaults, only ::1/128 and ::/128 in 0000::/16); only then
 * by a lookup in the excluded-prefix LPM trie (a call that cost more than the rest of the
 * counted path), which holds just those longer prefixes. External: skb->len and one
 * packet are added to a per-CPU slot, and to the remote endpoint's entry (address,
 * TCP/UDP port, protocol, direction, service) in the `dests` LRU hash, so userspace can
 * name the top destinations and a flood of new ones only evicts old ones. With
 * gso_correction (the default), a GSO/GRO aggregate (one skb standing for gso_segs packets
 * on the wire, its headers present once) counts as those packets, its missing headers
 * included. Always returns 1: this program observes, it never drops.
 *
 * Retarget: userspace fills the inactive config slot, then flips `active` (a 4-byte write
 * of 0 or 1: only its lowest byte changes, so no read sees any other value). A packet
 * reads `active` once and the slot it names; the slot it reads is rewritten only at the
 * retarget after next, one run interval (>= 0.1 s) later, far longer than any program
 * run, so no packet sees a torn target list.
 */
#include <linux/bpf.h>
#include <linux/in.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "netacct.h"
#include "targets.h"

#define LOOPBACK_IFINDEX 1

/*
 * Index of the config slot packets read: 0 or 1. A global, read with no map lookup (a
 * lookup cost ~1 ns on every packet); alone in its section, so userspace writes it as the
 * 4-byte value of the one-entry array map libbpf makes of ".data.active".
 */
__u32 active SEC(".data.active");

/* Excluded interfaces; like `active`, a global in its own section, read with no lookup. */
struct netacct_skip_ifs skip_ifs SEC(".data.skipifs");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, struct netacct_config);
} config SEC(".maps");

/* Apart from the per-retarget config: written once, and it would make every slot 128 KiB. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct netacct_verdicts);
} verdicts SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, NETACCT_MAX_EXCLUDE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct netacct_lpm_v4);
	__type(value, __u8);
} exclude_v4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, NETACCT_MAX_EXCLUDE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct netacct_lpm_v6);
	__type(value, __u8);
} exclude_v6 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, NETACCT_MAX_SERVICES * 2);
	__type(key, __u32);
	__type(value, struct netacct_counter);
} counters SEC(".maps");

/*
 * Bytes per remote endpoint. A lookup in this LRU hash cost ~35 ns per packet (jhash of
 * the key, LRU bookkeeping; the per-CPU flavour was no cheaper), more than the rest of
 * the counted path, so packets first add to `pending`: per CPU and direction, the last
 * endpoint seen and what it moved since. Consecutive packets of one flow (the bulk of the
 * bytes) pay one 24-byte compare; only a change of endpoint moves the pending sums into
 * `dests`. Userspace adds the pending sums to what it reads from `dests`.
 * Plain LRU with atomic adds: flushes are rare, and a read gets one value per endpoint
 * instead of one per CPU.
 */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, NETACCT_MAX_DESTS);
	__type(key, struct netacct_dest_key);
	__type(value, struct netacct_counter);
} dests SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 2); /* by enum netacct_dir: a softirq's ingress run never meets
				 * the egress run it interrupted on the same slot */
	__type(key, __u32);
	__type(value, struct netacct_pending);
} pending SEC(".maps");

static __always_inline struct netacct_config *active_config(void)
{
	__u32 k = active & 1;

	return bpf_map_lookup_elem(&config, &k);
}

/* Service index of the first target cgroup the packet's socket sits in or below, or -1. */
static __always_inline int find_service(struct __sk_buff *skb, struct netacct_config *cfg)
{
#pragma unroll
	for (int i = 0; i < NETACCT_MAX_LEVELS; i++) {
		if (i >= cfg->nr_levels)
			break;
		int svc = bucket_service(cfg, bpf_skb_ancestor_cgroup_id(skb, cfg->levels[i]));

		if (svc >= 0)
			return svc;
	}
	return -1;
}

/* The verdict of the address's first 16 bits; NETACCT_ASK_TRIE when they do not settle it. */
static __always_inline int table_verdict(int v6, const __u8 *addr)
{
	__u32 zero = 0;
	struct netacct_verdicts *t = bpf_map_lookup_elem(&verdicts, &zero);
	__u16 k = *(const __u16 *)addr; /* see struct netacct_verdicts for why one load */

	if (!t)
		return NETACCT_ASK_TRIE;
	return v6 ? t->v6[k] : t->v4[k];
}

/* Word copies into the trie keys: a byte-wise memcpy of 16 bytes was 48 instructions. */
static __always_inline int excluded_v4(const __u32 *addr)
{
	int verdict = table_verdict(0, (const __u8 *)addr);

	if (verdict != NETACCT_ASK_TRIE)
		return verdict;
	struct netacct_lpm_v4 key = { .prefixlen = 32 };

	*(__u32 *)key.addr = addr[0];
	return bpf_map_lookup_elem(&exclude_v4, &key) != 0;
}

static __always_inline int excluded_v6(const __u32 *addr)
{
	int verdict = table_verdict(1, (const __u8 *)addr);

	if (verdict != NETACCT_ASK_TRIE)
		return verdict;
	struct netacct_lpm_v6 key = { .prefixlen = 128 };
	__u32 *k = (__u32 *)key.addr;

	k[0] = addr[0];
	k[1] = addr[1];
	k[2] = addr[2];
	k[3] = addr[3];
	return bpf_map_lookup_elem(&exclude_v6, &key) != 0;
}

/*
 * Judges the remote address (source on ingress, destination on egress). For an external
 * one, fills the key's address, family and protocol, sets *l4off to the transport
 * header's offset (0 for an IPv4 fragment after the first: it has none) and returns 0.
 * Returns 1 when the remote is internal, or the packet is not IP (nothing to judge).
 */
static __always_inline int parse_remote(struct __sk_buff *skb, int dir,
					struct netacct_dest_key *key, __u32 *l4off)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	const __u8 *ip = data;
	__u32 copy[10]; /* u32s: the verifier wants aligned stack reads */

	/* 40 bytes hold an IPv6 header and the addresses of an IPv4 one. */
	if (data + 40 > data_end) {
		/* Rare: a tiny IPv4 packet, or headers not in the linear part. */
		__builtin_memset(copy, 0, sizeof(copy));
		if (bpf_skb_load_bytes(skb, 0, copy, skb->len < 40 ? 20 : 40))
			return 1;
		ip = (const __u8 *)copy;
	}
	__u32 *out = (__u32 *)key->addr;
	const __u32 *w;

	switch (ip[0] >> 4) {
	case 4: /* saddr at offset 12, daddr at 16 */
		w = (const __u32 *)(ip + (dir == NETACCT_DIR_TX ? 16 : 12));
		if (excluded_v4(w))
			return 1;
		out[0] = w[0];
		key->family = 4;
		key->proto = ip[9];
		*l4off = ((ip[6] & 0x1f) | ip[7]) ? 0 : (ip[0] & 0xf) * 4;
		return 0;
	case 6: /* saddr at offset 8, daddr at 24 */
		w = (const __u32 *)(ip + (dir == NETACCT_DIR_TX ? 24 : 8));
		if (w[0] == 0 && w[1] == 0 && w[2] == bpf_htonl(0x0000ffff)) {
			if (excluded_v4(w + 3))
				return 1;
			out[0] = w[3];
			key->family = 4;
		} else {
			if (excluded_v6(w))
				return 1;
			out[0] = w[0];
			out[1] = w[1];
			out[2] = w[2];
			out[3] = w[3];
			key->family = 6;
		}
		key->proto = ip[6]; /* extension headers are not followed: no port then */
		*l4off = 40;
		return 0;
	default:
		return 1;
	}
}

/* Sets the key's remote port; returns the TCP/UDP header length (0 for other protocols). */
static __always_inline __u32 parse_transport(struct __sk_buff *skb, __u32 l4off, int dir,
					     struct netacct_dest_key *key)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	__u32 copy[4];

	if ((key->proto != IPPROTO_TCP && key->proto != IPPROTO_UDP) || l4off == 0)
		return 0;
	l4off &= 63; /* an IPv4 header is at most 60 bytes; tells the verifier so */
	const __u8 *l4 = data + l4off;

	/* Ports at 0 and 2, TCP's data offset at 12. */
	if ((void *)l4 + 14 > data_end) {
		copy[3] = 0;
		if (bpf_skb_load_bytes(skb, l4off, copy, key->proto == IPPROTO_TCP ? 14 : 8))
			return 0;
		l4 = (const __u8 *)copy;
	}
	key->port = *(const __u16 *)(l4 + (dir == NETACCT_DIR_TX ? 2 : 0));
	if (key->proto == IPPROTO_UDP)
		return 8;
	__u32 doff = (l4[12] >> 4) * 4;
	return doff < 20 ? 20 : doff;
}

static __always_inline void flush_dest(struct netacct_pending *p)
{
	struct netacct_counter *d = bpf_map_lookup_elem(&dests, &p->key);

	if (!d) {
		struct netacct_counter first = { .bytes = p->bytes, .packets = p->packets };

		/* EEXIST: another CPU added it meanwhile; add to that entry instead. */
		if (bpf_map_update_elem(&dests, &p->key, &first, BPF_NOEXIST) == 0)
			return;
		d = bpf_map_lookup_elem(&dests, &p->key);
		if (!d)
			return;
	}
	__sync_fetch_and_add(&d->bytes, p->bytes);
	__sync_fetch_and_add(&d->packets, p->packets);
}

static __always_inline void add_dest(struct netacct_dest_key *key, __u32 dir, __u64 len,
				     __u64 pkts)
{
	struct netacct_pending *p = bpf_map_lookup_elem(&pending, &dir);

	if (!p)
		return;
	const __u64 *k = (const __u64 *)key, *q = (const __u64 *)&p->key;

	if (k[0] == q[0] && k[1] == q[1] && k[2] == q[2]) {
		p->bytes += len;
		p->packets += pkts;
		return;
	}
	if (p->packets)
		flush_dest(p);
	p->key = *key;
	p->bytes = len;
	p->packets = pkts;
}

/*
 * Whether the packet's interface is excluded: one load when none is (the default), else a
 * compare per slot, unrolled (unused slots hold NETACCT_NO_IFINDEX, which matches nothing).
 */
static __always_inline int skipped_interface(__u32 ifindex)
{
	if (!skip_ifs.count)
		return 0;
#pragma unroll
	for (int i = 0; i < NETACCT_MAX_SKIP_IFS; i++) {
		if (skip_ifs.ifindex[i] == ifindex)
			return 1;
	}
	return 0;
}

static __always_inline int account(struct __sk_buff *skb, int dir)
{
	__u32 ifindex = skb->ifindex;

	if (ifindex == LOOPBACK_IFINDEX || skipped_interface(ifindex))
		return 1;
	struct netacct_config *cfg = active_config();
	if (!cfg)
		return 1;
	int svc = find_service(skb, cfg);
	if (svc < 0 || svc >= NETACCT_MAX_SERVICES)
		return 1;
	struct netacct_dest_key key = {};
	__u32 l4off = 0;

	if (parse_remote(skb, dir, &key, &l4off))
		return 1;
	key.service = svc;
	key.dir = dir;
	__u64 len = skb->len, pkts = 1;
	__u32 l4len = parse_transport(skb, l4off, dir, &key);
	__u32 segs = skb->gso_segs;

	/* The wire carries the aggregate as gso_segs packets, each with its own headers. */
	if (cfg->gso_correction && segs > 1 && l4off) {
		len += (__u64)(segs - 1) * (l4off + l4len);
		pkts = segs;
	}
	__u32 slot = (__u32)svc * 2 + dir;
	struct netacct_counter *c = bpf_map_lookup_elem(&counters, &slot);
	if (c) {
		/*
		 * Atomic although per CPU: egress runs in process context with softirqs
		 * enabled, and a softirq on this CPU (an ACK, a timer's retransmit) can run
		 * egress for the same slot between a plain add's load and store.
		 */
		__sync_fetch_and_add(&c->bytes, len);
		__sync_fetch_and_add(&c->packets, pkts);
	}
	add_dest(&key, dir, len, pkts);
	return 1;
}

SEC("cgroup_skb/ingress")
int netacct_ingress(struct __sk_buff *skb)
{
	return account(skb, NETACCT_DIR_RX);
}

SEC("cgroup_skb/egress")
int netacct_egress(struct __sk_buff *skb)
{
	return account(skb, NETACCT_DIR_TX);
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
