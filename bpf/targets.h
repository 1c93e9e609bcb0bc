/* SPDX-License-Identifier: GPL-2.0 OR MIT */
/*
 * Target matching shared by netacct.bpf.c and events.bpf.c, both of which read a
 * struct netacct_config (netacct.h) that userspace fills the same way.
 */
#ifndef NETACCT_TARGETS_H
#define NETACCT_TARGETS_H

#include "netacct.h"

/*
 * Service index of target cgroup `id`, or -1: compares only the ids of its bucket, at most
 * NETACCT_BUCKET_SLOTS of them, in a scan unrolled so every verifier sees a straight path.
 */
static __always_inline int bucket_service(const struct netacct_config *cfg, __u64 id)
{
	__u32 b = NETACCT_BUCKET(id, cfg->bucket_mul);
	__u32 first = cfg->first[b];
	__u32 end = cfg->first[b + 1];

#pragma unroll
	for (__u32 i = 0; i < NETACCT_BUCKET_SLOTS; i++) {
		__u32 j = first + i;

		if (j >= end)
			return -1;
		if (cfg->ids[j & (NETACCT_MAX_TARGETS - 1)] == id)
			return cfg->service[j & (NETACCT_MAX_TARGETS - 1)];
	}
	return -1;
}

#endif /* NETACCT_TARGETS_H */
