// SPDX-License-Identifier: GPL-2.0 OR MIT
/*
 * Connect events for stb-netacct: who in StB's cgroups talks to whom.
 *
 * Attach points: cgroup/connect4, cgroup/connect6 (every connect(2), TCP and UDP) and
 * cgroup/sendmsg4, cgroup/sendmsg6 (datagrams an unconnected UDP socket sends with an
 * address), linked at each service cgroup like netacct's programs.
 *
 * The calling task's ancestor cgroup at each target level (these hooks run in the context
 * of the process calling connect or sendmsg, and cannot read the socket's cgroup) is
 * matched against the same config netacct reads (targets.h). A match writes one struct
 * netacct_event to the `events` ring buffer; a full buffer adds one to the per-CPU
 * `dropped` counter instead, so an overflow is counted, never silent. Each record carries
 * the socket's cookie (bpf_get_socket_cookie: what getsockopt SO_COOKIE returns), so one
 * socket's events can be told from another's. sendmsg reports only a socket's first
 * datagram: the socket is marked in socket-local storage, which the kernel frees with it.
 * Internal or external is judged in userspace, by the same exclusion list as the counters.
 * Always returns 1: these programs observe, they never refuse a connect or a datagram.
 */
#include <linux/bpf.h>
#include <linux/in.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "netacct.h"
#include "targets.h"
#include "events.h"

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32); /* index of the config slot programs read: 0 or 1 */
} active SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, struct netacct_config);
} config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, NETACCT_EVENTS_RING_BYTES);
} events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} dropped SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, __u8);
} reported SEC(".maps");

static __always_inline int find_service(struct bpf_sock_addr *ctx)
{
	__u32 zero = 0;
	__u32 *slot = bpf_map_lookup_elem(&active, &zero);

	if (!slot || !ctx->sk)
		return -1;
	__u32 k = *slot & 1;
	struct netacct_config *cfg = bpf_map_lookup_elem(&config, &k);

	if (!cfg)
		return -1;
#pragma unroll
	for (int i = 0; i < NETACCT_MAX_LEVELS; i++) {
		if (i >= cfg->nr_levels)
			break;
		int svc = bucket_service(cfg, bpf_get_current_ancestor_cgroup_id(cfg->levels[i]));

		if (svc >= 0)
			return svc;
	}
	return -1;
}

static __always_inline int report(struct bpf_sock_addr *ctx, int family, int kind)
{
	int svc = find_service(ctx);

	if (svc < 0)
		return 1;
	if (kind == NETACCT_EVENT_SENDMSG) {
		__u8 *seen = bpf_sk_storage_get(&reported, ctx->sk, 0, BPF_SK_STORAGE_GET_F_CREATE);

		if (!seen || *seen)
			return 1;
		*seen = 1;
	}
	struct netacct_event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);

	if (!e) {
		__u32 zero = 0;
		__u64 *n = bpf_map_lookup_elem(&dropped, &zero);

		if (n)
			*n += 1;
		return 1;
	}
	__u64 id = bpf_get_current_pid_tgid();
	__u32 *out = (__u32 *)e->addr;

	e->ts_ns = bpf_ktime_get_ns();
	e->pid = (__u32)id;
	e->tgid = id >> 32;
	bpf_get_current_comm(e->comm, sizeof(e->comm));
	e->service = svc;
	e->port = bpf_ntohs((__u16)ctx->user_port);
	e->proto = ctx->protocol;
	e->kind = kind;
	e->pad = 0;
	e->cookie = bpf_get_socket_cookie(ctx);
	if (family == 4) {
		out[0] = ctx->user_ip4;
		out[1] = out[2] = out[3] = 0;
		e->family = 4;
	} else if (ctx->user_ip6[0] == 0 && ctx->user_ip6[1] == 0 &&
		   ctx->user_ip6[2] == bpf_htonl(0x0000ffff)) {
		out[0] = ctx->user_ip6[3]; /* IPv4-mapped: report the IPv4 address */
		out[1] = out[2] = out[3] = 0;
		e->family = 4;
	} else {
		out[0] = ctx->user_ip6[0];
		out[1] = ctx->user_ip6[1];
		out[2] = ctx->user_ip6[2];
		out[3] = ctx->user_ip6[3];
		e->family = 6;
	}
	bpf_ringbuf_submit(e, 0);
	return 1;
}

SEC("cgroup/connect4")
int events_connect4(struct bpf_sock_addr *ctx)
{
	return report(ctx, 4, NETACCT_EVENT_CONNECT);
}

SEC("cgroup/connect6")
int events_connect6(struct bpf_sock_addr *ctx)
{
	return report(ctx, 6, NETACCT_EVENT_CONNECT);
}

SEC("cgroup/sendmsg4")
int events_sendmsg4(struct bpf_sock_addr *ctx)
{
	return report(ctx, 4, NETACCT_EVENT_SENDMSG);
}

SEC("cgroup/sendmsg6")
int events_sendmsg6(struct bpf_sock_addr *ctx)
{
	return report(ctx, 6, NETACCT_EVENT_SENDMSG);
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
