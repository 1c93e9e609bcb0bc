// SPDX-License-Identifier: GPL-2.0 OR MIT
/*
 * The floor for bench/bpf_bench.ts: a cgroup_skb program that only returns 1, run through
 * BPF_PROG_TEST_RUN exactly like netacct's programs, so the table can show what
 * netacct adds on top of the cost of running any cgroup_skb program at all.
 * Never attached anywhere.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

SEC("cgroup_skb/egress")
int trivial(struct __sk_buff *skb)
{
	return 1;
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
