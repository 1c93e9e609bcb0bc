/* SPDX-License-Identifier: GPL-2.0 OR MIT */
/*
 * The record events.bpf.c writes to its ring buffer. The one TypeScript mirror is
 * bpf/events_abi.ts: change both together (its tests pin every size and offset).
 */
#ifndef NETACCT_EVENTS_H
#define NETACCT_EVENTS_H

#include <linux/types.h>

/* Bytes of the `events` ring buffer (a power of two, a multiple of the page size). */
#define NETACCT_EVENTS_RING_BYTES (256 * 1024)

enum netacct_event_kind {
	NETACCT_EVENT_CONNECT = 0, /* connect(2), TCP or UDP */
	NETACCT_EVENT_SENDMSG = 1, /* first datagram an unconnected UDP socket sent */
};

struct netacct_event {
	__u64 ts_ns; /* CLOCK_MONOTONIC (bpf_ktime_get_ns) */
	__u32 pid; /* thread id (the kernel's pid) */
	__u32 tgid; /* process id */
	__u8 comm[16]; /* the thread's name, NUL-padded */
	__u8 addr[16]; /* remote address, network order; IPv4 (also mapped) in the first 4 */
	__u16 service; /* service index, as in netacct's config */
	__u16 port; /* remote port, host order */
	__u8 family; /* 4 or 6 */
	__u8 proto; /* IPPROTO_TCP, IPPROTO_UDP, ... */
	__u8 kind; /* enum netacct_event_kind */
	__u8 pad;
	__u64 cookie; /* the socket's cookie (SO_COOKIE): one socket's events share it */
};

#endif /* NETACCT_EVENTS_H */
