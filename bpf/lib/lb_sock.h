/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Socket-level load balancing (IPv4, TCP and UDP), for the cgroup socket
 * address hooks of bpf/sock.c.
 *
 * connect() to a frontend (VIP:port/proto in porin_lb_svc) is rewritten to a
 * backend before the kernel routes anything: a TCP connection is translated
 * once and its packets carry the backend address from the first SYN, so the
 * per-packet DNAT of the pod program never sees them. Unconnected UDP is
 * translated per datagram in sendmsg.
 *
 * Every translation records {socket cookie, backend address, port} -> frontend
 * in porin_lb_sknat, so recvmsg (the source of a UDP reply) and getpeername
 * give the application the service address back: it only ever sees the VIP.
 *
 * A frontend without backends refuses at once: the hook sets the syscall's
 * return value to -ECONNREFUSED (bpf_set_retval, Linux >= 5.19) and rejects.
 */
#pragma once

#include "bpf_api.h"
#include "common.h"
#include "lb_pick.h"
#include "maps.h"

#include <linux/in.h>

#define LB_SOCK_REJECT 0
#define LB_SOCK_PROCEED 1
#define LB_SOCK_ECONNREFUSED 111
#define PORIN_LB_SKNAT_MAX_ENTRIES 65536

static __u64 (*bpf_get_socket_cookie)(void *ctx) = (void *)46;
static long (*bpf_set_retval)(int retval) = (void *)187;
static __u64 (*bpf_get_netns_cookie)(void *ctx) = (void *)122;

/* Socket cookie and the backend it was sent to (network byte order address and port). */
struct porin_lb_sk_key {
	__u64 cookie;
	__u32 addr;
	__u16 port;
	__u16 pad;
};

/* The frontend the application asked for (network byte order). */
struct porin_lb_sk_value {
	__u32 vip;
	__u16 port;
	__u16 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, PORIN_LB_SKNAT_MAX_ENTRIES);
	__type(key, struct porin_lb_sk_key);
	__type(value, struct porin_lb_sk_value);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} porin_lb_sknat SEC(".maps");

static __always_inline __u8 lb_sock_proto(const struct bpf_sock_addr *ctx)
{
	if (ctx->protocol == IPPROTO_TCP)
		return IPPROTO_TCP;
	if (ctx->protocol == IPPROTO_UDP)
		return IPPROTO_UDP;
	return 0;
}

/* The start of a socket's Maglev hash: its netns cookie (lb_sock_hash, lb_sock6_hash). */
static __always_inline __u32 lb_sock_hash_netns(__u64 netns)
{
	return lb_hash_word(lb_hash_word(0, (__u32)netns), (__u32)(netns >> 32));
}

/* The Maglev hash of a socket: its netns cookie and the frontend it asked for. */
static __always_inline __u32 lb_sock_hash(__u64 netns, const struct porin_lb_svc_key *skey)
{
	__u32 h = lb_hash_word(lb_sock_hash_netns(netns), skey->vip);

	return lb_hash_final(lb_hash_word(h, ((__u32)skey->port << 16) | skey->proto));
}

/*
 * Forward translation (connect4, sendmsg4): rewrites the destination of a
 * socket aimed at a frontend. Returns the hook verdict.
 */
static __always_inline int lb_sock_fwd(struct bpf_sock_addr *ctx)
{
	struct porin_lb_svc_key skey = {};
	struct porin_lb_svc_value *svc;
	struct porin_lb_backend *be;
	__u32 backend_id;
	__u8 proto = lb_sock_proto(ctx);

	if (!proto || ctx->user_family != 2 /* AF_INET */)
		return LB_SOCK_PROCEED;
	skey.vip = ctx->user_ip4;
	skey.port = bpf_ntohs((__u16)ctx->user_port);
	skey.proto = proto;
	svc = bpf_map_lookup_elem(&porin_lb_svc, &skey);
	if (!svc)
		return LB_SOCK_PROCEED;
	if (svc->backend_count == 0) {
		bpf_set_retval(-LB_SOCK_ECONNREFUSED);
		return LB_SOCK_REJECT;
	}
	/* The client's address is not chosen yet at connect(): its netns stands for it,
	 * in affinity and in the Maglev hash (with the frontend asked for). */
	{
		__u64 netns = bpf_get_netns_cookie(ctx);

		be = lb_pick_backend(svc, netns, 1, lb_sock_hash(netns, &skey), &backend_id);
	}
	if (!be)
		return LB_SOCK_PROCEED; /* mid-update: leave it to the per-packet path */
	{
		struct porin_lb_sk_key rkey = {
			.cookie = bpf_get_socket_cookie(ctx),
			.addr = be->addr,
			.port = bpf_htons(be->port),
		};
		struct porin_lb_sk_value rval = {
			.vip = skey.vip,
			.port = (__u16)ctx->user_port,
		};

		/* LRU: makes room by itself; a failure only costs the VIP in getpeername. */
		bpf_map_update_elem(&porin_lb_sknat, &rkey, &rval, BPF_ANY);
	}
	ctx->user_ip4 = be->addr;
	ctx->user_port = bpf_htons(be->port);
	return LB_SOCK_PROCEED;
}

/* Reverse translation (recvmsg4, getpeername4): backend -> the frontend asked for. */
static __always_inline int lb_sock_rev(struct bpf_sock_addr *ctx)
{
	struct porin_lb_sk_value *rval;
	struct porin_lb_sk_key rkey = {};

	if (!lb_sock_proto(ctx) || ctx->user_family != 2 /* AF_INET */)
		return LB_SOCK_PROCEED;
	rkey.cookie = bpf_get_socket_cookie(ctx);
	rkey.addr = ctx->user_ip4;
	rkey.port = (__u16)ctx->user_port;
	rval = bpf_map_lookup_elem(&porin_lb_sknat, &rkey);
	if (!rval)
		return LB_SOCK_PROCEED;
	ctx->user_ip4 = rval->vip;
	ctx->user_port = rval->port;
	return LB_SOCK_PROCEED;
}
