/* SPDX-License-Identifier: GPL-2.0 OR MIT */
/*
 * Layouts shared by netacct.bpf.c and userspace. The one TypeScript mirror is
 * backends/bpf_abi.ts: change both together (its tests pin every size and offset).
 */
#ifndef NETACCT_H
#define NETACCT_H

#include <linux/types.h>

/* Services the counters array has room for; config refuses more. */
#define NETACCT_MAX_SERVICES 32
/* Distinct cgroup depths the program probes per packet (targets usually share one). */
#define NETACCT_MAX_LEVELS 4
/* Cgroup ids in the targets map: one per service, with room for a stale id during retarget. */
#define NETACCT_MAX_TARGETS 64
/* Prefixes per excluded-address trie. */
#define NETACCT_MAX_EXCLUDE 1024

/* Counter slot = service index * 2 + direction. */
enum netacct_dir {
	NETACCT_DIR_RX = 0, /* cgroup_skb/ingress: remote address is the source */
	NETACCT_DIR_TX = 1, /* cgroup_skb/egress: remote address is the destination */
};

/*
 * Value of the one-entry `config` array.
 * id_bits: bit (id % 64) is set for every cgroup id in `targets`, so most non-target
 * packets skip the hash lookup (the costliest step of the uncounted path); a set bit
 * only means "look in `targets`", which stays the authority.
 * levels: cgroup depths holding a target, deepest first, nr_levels of them in use.
 */
struct netacct_config {
	__u64 id_bits;
	__u32 nr_levels;
	__u32 levels[NETACCT_MAX_LEVELS];
	__u32 pad; /* explicit, so both sides agree on sizeof == 32 */
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
