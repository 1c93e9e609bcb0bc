// SPDX-License-Identifier: GPL-2.0 OR MIT
/*
 * Cgroup level calibration for stb-netacct: how deep the cgroup2 mount's root sits in
 * the kernel's hierarchy.
 *
 * Attach point: none. This cgroup_skb/egress program is never linked anywhere; userspace
 * runs it once with BPF_PROG_TEST_RUN at start. The kernel gives the test skb a socket in
 * the CALLING task's cgroup, so bpf_skb_ancestor_cgroup_id(skb, i) lists the caller's
 * ancestors by the kernel's absolute levels (the real root is level 0) -- the levels
 * netacct (same helper) and events (bpf_get_current_ancestor_cgroup_id: same cgroup
 * levels) compare against. Inside a cgroup namespace (containers) the mount's root is
 * not the kernel's root, so the levels userspace counts from the mount are short by that
 * root's depth; userspace finds its own cgroup's id in this list to learn by how much.
 *
 * Writes ancestors[i] for each level up to and including the socket's own cgroup, then
 * the 0 the helper returns below it; returns 1 (a test run drops nothing real anyway).
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

/* Levels recorded at most; a deeper cgroup is reported as such by userspace. */
#define CALIBRATE_MAX_LEVELS 64

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64[CALIBRATE_MAX_LEVELS]); /* ancestor cgroup id by absolute level */
} ancestors SEC(".maps");

static __always_inline int record_ancestors(struct __sk_buff *skb)
{
	__u32 zero = 0;
	__u64 *ids = bpf_map_lookup_elem(&ancestors, &zero);

	if (!ids)
		return 1;
	for (int i = 0; i < CALIBRATE_MAX_LEVELS; i++) {
		__u64 id = bpf_skb_ancestor_cgroup_id(skb, i);

		ids[i] = id;
		if (!id)
			break;
	}
	return 1;
}

SEC("cgroup_skb/egress")
int calibrate_egress(struct __sk_buff *skb)
{
	return record_ancestors(skb);
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
