// SPDX-License-Identifier: GPL-2.0 OR MIT
/*
 * DNS capture for stb-netacct's names: the DNS messages StB's own sockets exchange, so
 * userspace can name the addresses StB talks to by the names StB asked for.
 *
 * Attach points: cgroup_skb/ingress and cgroup_skb/egress, linked at each service cgroup
 * like the counting programs (bpf/cgroup_links.ts), so only StB's sockets run them, on any
 * interface (loopback included: answers from a local stub resolver such as 127.0.0.53).
 *
 * Per packet: IPv4 (not a later fragment) or IPv6 without extension headers, UDP, source
 * port 53 on ingress (an answer) or destination port 53 on egress (a query) -> the first
 * NETACCT_DNS_COPY payload bytes go to the `dns` ring buffer; a full buffer adds one to
 * the per-CPU `dropped` counter. Everything else returns at the protocol or port check.
 * Parsing, and judging whether an answer belongs to a query, is userspace's (names/).
 * DNS over TCP is not captured. Always returns 1: these programs observe, never drop.
 *
 * `active` and `config` are the targets every object linked at the service cgroups holds
 * (bpf/targeted_object.ts); these programs need no per-packet match, as only StB's
 * sockets run them.
 */
#include <linux/bpf.h>
#include <linux/in.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "netacct.h"
#include "dns.h"

#define DNS_PORT 53

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} active SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, struct netacct_config);
} config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, NETACCT_DNS_RING_BYTES);
} dns SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} dropped SEC(".maps");

static __always_inline int capture(struct __sk_buff *skb, int dir)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	const __u8 *ip = data;
	__u32 hdr[5]; /* u32s: the verifier wants aligned stack reads */
	__u32 l4off, proto, family;

	/* Direct reads where the headers are linear (nearly always): a helper call per packet
	 * cost ~10 ns, and every packet of StB's runs this. */
	if (data + 20 > data_end) {
		if (bpf_skb_load_bytes(skb, 0, hdr, 20))
			return 1;
		ip = (const __u8 *)hdr;
	}
	switch (ip[0] >> 4) {
	case 4:
		if ((ip[6] & 0x1f) | ip[7])
			return 1; /* a later fragment: no UDP header */
		proto = ip[9];
		l4off = (ip[0] & 0xf) * 4;
		family = 4;
		break;
	case 6:
		proto = ip[6];
		l4off = 40;
		family = 6;
		break;
	default:
		return 1;
	}
	if (proto != IPPROTO_UDP || l4off < 20)
		return 1;
	l4off &= 63; /* an IPv4 header is at most 60 bytes; tells the verifier so */
	const __u8 *l4 = data + l4off;
	__u32 ports;

	if ((void *)l4 + 4 > data_end) {
		if (bpf_skb_load_bytes(skb, l4off, &ports, 4))
			return 1;
		l4 = (const __u8 *)&ports;
	}
	if (*(const __u16 *)(l4 + (dir == NETACCT_DNS_QUERY ? 2 : 0)) != bpf_htons(DNS_PORT))
		return 1;
	__u32 off = l4off + 8;

	if (skb->len <= off)
		return 1;
	__u32 len = skb->len - off;
	__u32 copy = len < NETACCT_DNS_COPY ? len : NETACCT_DNS_COPY;
	struct netacct_dns_record *r = bpf_ringbuf_reserve(&dns, sizeof(*r), 0);

	if (!r) {
		__u32 zero = 0;
		__u64 *n = bpf_map_lookup_elem(&dropped, &zero);

		if (n)
			*n += 1;
		return 1;
	}
	r->len = len;
	r->dir = dir;
	r->family = family;
	r->copied = 0;
	/*
	 * copy is 1..NETACCT_DNS_COPY already; said again in a form every verifier follows
	 * (a masked value plus one), which clang cannot fold into a range check it forgets.
	 */
	barrier_var(copy);
	copy = ((copy - 1) & (NETACCT_DNS_COPY - 1)) + 1;
	if (bpf_skb_load_bytes(skb, off, r->data, copy) == 0)
		r->copied = copy;
	bpf_ringbuf_submit(r, 0);
	return 1;
}

SEC("cgroup_skb/ingress")
int dns_ingress(struct __sk_buff *skb)
{
	return capture(skb, NETACCT_DNS_ANSWER);
}

SEC("cgroup_skb/egress")
int dns_egress(struct __sk_buff *skb)
{
	return capture(skb, NETACCT_DNS_QUERY);
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
