/* SPDX-License-Identifier: GPL-2.0 OR MIT */
/*
 * Target matching shared by netacct.bpf.c and events.bpf.c, both of which read a
 * struct netacct_config (netacct.h) that userspace fills the same way.
 */
#ifndef NETACCT_TARGETS_H
#define NETACCT_TARGETS_H

#include "netacct.h"

/* Service index of target cgroup `id`, or -1: scans only the id's bucket. */
static __always_inline int bucket_service(const struct netacct_config *cfg, __u64 id)
{
	__u32 b = id & (NETACCT_ID_BUCKETS - 1);
	__u32 end = cfg->first[b + 1];

	for (__u32 j = cfg->first[b]; j < end && j < NETACCT_MAX_TARGETS; j++) {
		/* Keeps clang from turning j into a pointer the verifier can't bound. */
		asm volatile("" : "+r"(j));
		if (cfg->ids[j & (NETACCT_MAX_TARGETS - 1)] == id)
			return cfg->service[j & (NETACCT_MAX_TARGETS - 1)];
	}
	return -1;
}

#endif /* NETACCT_TARGETS_H */
