// SPDX-License-Identifier: GPL-2.0 OR MIT
/*
 * Floors: what running any cgroup_skb program costs, against which netacct's are judged.
 *   trivial          returns 1: run through BPF_PROG_TEST_RUN by bench/bpf_bench.ts, linked
 *                    to a cgroup's egress by bench/real_cost.ts (BPF_ENABLE_STATS), and
 *                    with trivial_ingress at the cgroup2 root by bench/throughput.ts's
 *                    "floor" configuration: the throughput any cgroup_skb program costs;
 *   trivial_ingress  the same at ingress (a program is linked at its section's direction);
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

SEC("cgroup_skb/ingress")
int trivial_ingress(struct __sk_buff *skb)
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
