/* SPDX-License-Identifier: GPL-2.0 OR MIT */
/*
 * Layouts shared by netacct.bpf.c and userspace. The one TypeScript mirror is
 * backends/bpf_abi.ts: change both together (its tests pin every size and offset).
 */
#ifndef NETACCT_H
#define NETACCT_H

#include <linux/types.h>

/* Services the counters array has room for; matches the config's limit of 512. */
#define NETACCT_MAX_SERVICES 512
/* Distinct cgroup depths the program probes per packet (targets usually share one). */
#define NETACCT_MAX_LEVELS 4
/* Target cgroup ids in a config slot: one per service. */
#define NETACCT_MAX_TARGETS 512
/*
 * Buckets of the target list, by a multiplicative hash of the cgroup id (a power of two).
 * Four per target: a packet reads only its own bucket's two bounds, so more buckets cost
 * no time, and keep most non-target cgroups in an empty bucket even with 512 targets.
 */
#define NETACCT_ID_BUCKETS 2048
/*
 * Ids one bucket holds at most. The scan is unrolled to this many compares, because a
 * loop bounded only by data is walked path by path by older verifiers (Linux 6.1 gives up
 * with "The sequence of 8193 jumps is too complex"); userspace picks the hash multiplier
 * so that no bucket holds more.
 */
#define NETACCT_BUCKET_SLOTS 4
/* Prefixes per excluded-address trie (no preallocation: memory follows the list in use). */
#define NETACCT_MAX_EXCLUDE 131072
/* Remote endpoints the `dests` LRU map remembers (least recently used ones make room). */
#define NETACCT_MAX_DESTS 4096

/* Interfaces besides loopback whose packets never count (config "exclude_interfaces"). */
#define NETACCT_MAX_SKIP_IFS 15

/* Entries per family of struct netacct_verdicts: one per value of an address's first 16 bits. */
#define NETACCT_VERDICT_KEYS 65536

/* Values of struct netacct_verdicts, by the remote address's first 16 bits. */
enum netacct_verdict {
	NETACCT_EXTERNAL = 0, /* no excluded prefix holds any address starting with these bits */
	NETACCT_INTERNAL = 1, /* an excluded prefix of length <= 16 holds them all */
	NETACCT_ASK_TRIE = 2, /* a longer excluded prefix starts with them: look up the trie */
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
 * (NETACCT_BUCKET(id, bucket_mul)); bucket b's entries are [first[b], first[b + 1]), at
 * most NETACCT_BUCKET_SLOTS of them, so a non-target packet usually finds its bucket empty
 * and compares no id at all.
 * bucket_mul: the odd multiplier of the bucket hash, chosen by userspace for this list.
 * levels: cgroup depths holding a target, deepest first, nr_levels of them in use.
 * gso_correction: when 1, a GSO/GRO aggregate counts as the packets it stands for on the
 * wire: gso_segs packets of skb->len + (gso_segs - 1) * (IP + TCP/UDP header length) bytes.
 */
struct netacct_config {
	__u64 ids[NETACCT_MAX_TARGETS];
	__u64 bucket_mul;
	__u32 nr_levels;
	__u32 levels[NETACCT_MAX_LEVELS];
	__u16 first[NETACCT_ID_BUCKETS + 1];
	__u16 service[NETACCT_MAX_TARGETS];
	__u8 gso_correction;
	__u8 pad[1]; /* explicit, so both sides agree on the offsets */
};

/*
 * Value of the one-entry `verdicts` array: enum netacct_verdict per first 16 address bits,
 * indexed by those two bytes read as one host-order __u16 (on little-endian hosts
 * addr[1] << 8 | addr[0]): a 2-byte load is a value the verifier knows is below 65536,
 * where Linux 6.1 forgets the bounds of an OR of two bytes. Derived from the excluded prefixes, so every remote
 * address that no prefix longer than /16 starts near is judged without an LPM trie lookup.
 * Written before the programs are attached, and again when on-link prefixes (config
 * "internal_onlink") change: trie entries are added before an entry turns ASK_TRIE and
 * removed after it stops being one, and only the entries that change differ.
 */
struct netacct_verdicts {
	__u8 v4[NETACCT_VERDICT_KEYS];
	__u8 v6[NETACCT_VERDICT_KEYS];
};

/* An ifindex no interface has (they are positive ints): what unused skip_ifs slots hold. */
#define NETACCT_NO_IFINDEX 0xffffffff

/*
 * The `skip_ifs` global: packets through ifindex[0..count) never count; the other slots
 * hold NETACCT_NO_IFINDEX. Userspace resolves
 * the configured names in its own network namespace and rewrites it when one appears, goes
 * or is renamed; a packet may see the list of just before or after such a change.
 */
struct netacct_skip_ifs {
	__u32 count;
	__u32 ifindex[NETACCT_MAX_SKIP_IFS];
};

/* Value of the per-CPU `counters` array and of the `dests` map. */
struct netacct_counter {
	__u64 bytes;
	__u64 packets;
};

/*
 * Key of the `dests` LRU hash: one remote endpoint of one service in one direction.
 * addr: network order, an IPv4 address (also one seen IPv4-mapped) in its first 4 bytes
 * and the rest zero. port: the remote TCP/UDP port in network order, 0 for other
 * protocols and for fragments after the first.
 */
struct netacct_dest_key {
	__u8 addr[16];
	__u16 service;
	__u16 port;
	__u8 family; /* 4 or 6 */
	__u8 proto; /* IPPROTO_TCP, IPPROTO_UDP, ... */
	__u8 dir; /* enum netacct_dir */
	__u8 pad; /* zero */
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

/*
 * Value of the per-CPU `pending` array (one slot per direction): the endpoint the last
 * counted packet went to or came from, and the bytes and packets it moved since they
 * were last added to `dests`. Part of that endpoint's total, which is dests + pending.
 */
struct netacct_pending {
	struct netacct_dest_key key;
	__u64 bytes;
	__u64 packets;
};

/*
 * The bucket of a cgroup id: the top 11 bits of id * mul (the product wraps at 64 bits;
 * its top bits depend on every bit of the id). The mask tells the verifier the range.
 */
#define NETACCT_BUCKET(id, mul) ((__u32)(((id) * (mul)) >> 53) & (NETACCT_ID_BUCKETS - 1))

#endif /* NETACCT_H */
