// SPDX-License-Identifier: GPL-2.0 OR MIT
/*
 * Floors for bench/bpf_bench.ts, run through BPF_PROG_TEST_RUN exactly like netacct's
 * programs and never attached anywhere:
 *   trivial          returns 1: the cost of running any cgroup_skb program at all;
 *   trivial_ancestor one bpf_skb_ancestor_cgroup_id call, then returns 1: the least any
 *                    program matching cgroups attached at the root can pay, so the table
 *                    can tell the helper's price on this machine from netacct's own work.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

SEC("cgroup_skb/egress")
int trivial(struct __sk_buff *skb)
{
	return 1;
}

SEC("cgroup_skb/egress")
int trivial_ancestor(struct __sk_buff *skb)
{
	__u64 id = bpf_skb_ancestor_cgroup_id(skb, 1);

	asm volatile("" : : "r"(id)); /* the id is used: the call stays */
	return 1;
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
