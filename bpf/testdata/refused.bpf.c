// SPDX-License-Identifier: GPL-2.0 OR MIT
/*
 * A program every verifier refuses, after a long straight path: its level-1 log is far
 * longer than 4 KiB and the reason (pointer math with an unbounded value) comes last. Never attached;
 * bpf/libbpf_test.ts loads it to check a refusal keeps the whole log and quotes its end.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64[8]);
} values SEC(".maps");

SEC("cgroup_skb/egress")
int refused(struct __sk_buff *skb)
{
	__u32 zero = 0;
	__u8 *v = bpf_map_lookup_elem(&values, &zero);
	__u64 x = skb->len;

	if (!v)
		return 1;
#pragma unroll
	for (int i = 0; i < 200; i++)
		x = x * 3 + skb->mark;
	return v[x]; /* x is unbounded: refused here */
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
