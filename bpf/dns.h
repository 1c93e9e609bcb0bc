/* SPDX-License-Identifier: GPL-2.0 OR MIT */
/*
 * The record dns.bpf.c writes to its ring buffer. The one TypeScript mirror is
 * bpf/dns_abi.ts: change both together (its tests pin every size and offset).
 */
#ifndef NETACCT_DNS_H
#define NETACCT_DNS_H

#include <linux/types.h>

/* Bytes of the `dns` ring buffer (a power of two, a multiple of the page size). */
#define NETACCT_DNS_RING_BYTES (1024 * 1024)
/* UDP payload bytes copied at most (a power of two): a DNS message without EDNS fits. */
#define NETACCT_DNS_COPY 512

enum netacct_dns_dir {
	NETACCT_DNS_ANSWER = 0, /* ingress, from port 53 */
	NETACCT_DNS_QUERY = 1, /* egress, to port 53 */
};

struct netacct_dns_record {
	__u32 len; /* UDP payload bytes in the packet (more than copied: cut short) */
	__u16 copied; /* bytes of data[] that hold the payload */
	__u8 dir; /* enum netacct_dns_dir */
	__u8 family; /* 4 or 6 */
	__u8 data[NETACCT_DNS_COPY];
};

#endif /* NETACCT_DNS_H */
