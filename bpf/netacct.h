/* SPDX-License-Identifier: GPL-2.0 OR MIT */
/*
 * Layouts shared by netacct.bpf.c and userspace. The one TypeScript mirror is
 * backends/bpf_abi.ts: change both together (its tests pin every size and offset).
 */
#ifndef NETACCT_H
#define NETACCT_H

#include <linux/types.h>

/* Services the counters array has room for; matches the config's limit of 64. */
#define NETACCT_MAX_SERVICES 64
/* Distinct cgroup depths the program probes per packet (targets usually share one). */
#define NETACCT_MAX_LEVELS 4
/* Target cgroup ids in a config slot: one per service. */
#define NETACCT_MAX_TARGETS 64
/* Buckets of the target list, by cgroup id % NETACCT_ID_BUCKETS (a power of two). */
#define NETACCT_ID_BUCKETS 64
/* Prefixes per excluded-address trie. */
#define NETACCT_MAX_EXCLUDE 1024

/* Values of netacct_config.verdict_v4/verdict_v6, by the remote address's first byte. */
enum netacct_verdict {
	NETACCT_EXTERNAL = 0, /* no excluded prefix holds any address with this first byte */
	NETACCT_INTERNAL = 1, /* an excluded prefix of length <= 8 holds them all */
	NETACCT_ASK_TRIE = 2, /* a longer excluded prefix starts with it: look up the trie */
};

/* Counter slot = service index * 2 + direction. */
enum netacct_dir {
	NETACCT_DIR_RX = 0, /* cgroup_skb/ingress: remote address is the source */
	NETACCT_DIR_TX = 1, /* cgroup_skb/egress: remote address is the destination */
};

/*
 * One slot of the two-entry `config` array; `active` names the slot packets read, so
 * userspace rewrites the other one and then flips `active`: a packet never sees a
 * half-written target list.
 * ids/service: the target cgroup ids and their service indexes, grouped by bucket
 * (id % NETACCT_ID_BUCKETS); bucket b's entries are [first[b], first[b + 1]), so a
 * non-target packet usually finds its bucket empty and compares no id at all.
 * levels: cgroup depths holding a target, deepest first, nr_levels of them in use.
 * verdict_v4/v6: enum netacct_verdict per first address byte, derived from the excluded
 * prefixes, so most remote addresses are judged without an LPM trie lookup.
 */
struct netacct_config {
	__u64 ids[NETACCT_MAX_TARGETS];
	__u32 nr_levels;
	__u32 levels[NETACCT_MAX_LEVELS];
	__u8 first[NETACCT_ID_BUCKETS + 1];
	__u8 service[NETACCT_MAX_TARGETS];
	__u8 pad[3]; /* explicit, so both sides agree on the offsets */
	__u8 verdict_v4[256];
	__u8 verdict_v6[256];
};

/* Value of the per-CPU `counters` array. */
struct netacct_counter {
	__u64 bytes;
	__u64 packets;
};

/* Keys of the `exclude_v4` / `exclude_v6` LPM tries (address in network order). */
struct netacct_lpm_v4 {
	__u32 prefixlen;
	__u8 addr[4];
};

struct netacct_lpm_v6 {
	__u32 prefixlen;
	__u8 addr[16];
};

#endif /* NETACCT_H */
