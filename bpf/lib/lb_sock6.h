/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Socket-level load balancing for IPv6 ClusterIPs (dual stack), the counterpart of
 * lb_sock.h for the connect6, sendmsg6, recvmsg6 and getpeername6 hooks.
 *
 * The frontends, slots and backends are the IPv6 maps of maps.h (porin_lb_svc6,
 * porin_lb_slots6, porin_lb_backends6); a frontend's backend is chosen by lb6_pick_backend
 * (lb_pick.h) as for IPv4: the netns's backend under sessionAffinity: ClientIP
 * (porin_lb_affin6), the Maglev slot of the socket's hash, or a random slot. Every
 * translation records
 * {socket cookie, backend} -> frontend in porin_lb_sknat6, so recvmsg6 and getpeername6
 * give the application the service address back. A frontend without backends refuses
 * at once with ECONNREFUSED, as for IPv4.
 */
#pragma once

#include "bpf_api.h"
#include "common.h"
#include "maps.h"
#include "lb_sock.h"

/* Socket cookie and the backend it was sent to (as on the wire). */
struct porin_lb_sk6_key {
	__u64 cookie;
	__u32 addr[4];
	__u16 port;
	__u16 pad[3];
};

/* The frontend the application asked for (as on the wire). */
struct porin_lb_sk6_value {
	__u32 vip[4];
	__u16 port;
	__u16 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, PORIN_LB_SKNAT_MAX_ENTRIES);
	__type(key, struct porin_lb_sk6_key);
	__type(value, struct porin_lb_sk6_value);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} porin_lb_sknat6 SEC(".maps");

/* ctx->user_ip6 is read and written one 32-bit word at a time (the verifier's rule). */
static __always_inline void lb_sock6_read(const struct bpf_sock_addr *ctx, __u32 *out)
{
	out[0] = ctx->user_ip6[0];
	out[1] = ctx->user_ip6[1];
	out[2] = ctx->user_ip6[2];
	out[3] = ctx->user_ip6[3];
}

static __always_inline void lb_sock6_write(struct bpf_sock_addr *ctx, const __u32 *in)
{
	ctx->user_ip6[0] = in[0];
	ctx->user_ip6[1] = in[1];
	ctx->user_ip6[2] = in[2];
	ctx->user_ip6[3] = in[3];
}

/* The Maglev hash of an IPv6 socket: its netns cookie and the frontend it asked for (as
 * lb_sock_hash, with the VIP as four words). */
static __always_inline __u32 lb_sock6_hash(__u64 netns, const struct porin_lb_svc6_key *skey)
{
	__u32 h = lb_hash_addr6(lb_sock_hash_netns(netns), skey->vip);

	return lb_hash_final(lb_hash_word(h, ((__u32)skey->port << 16) | skey->proto));
}

/* Forward translation (connect6, sendmsg6). Returns the hook verdict. */
static __always_inline int lb_sock6_fwd(struct bpf_sock_addr *ctx)
{
	struct porin_lb_svc6_key skey = {};
	struct porin_lb_svc_value *svc;
	struct porin_lb_backend6 *be;
	__u32 vip[4], backend[4];
	__u8 proto = lb_sock_proto(ctx);
	__u32 backend_id;

	if (!proto || ctx->user_family != 10 /* AF_INET6 */)
		return LB_SOCK_PROCEED;
	lb_sock6_read(ctx, vip);
	__builtin_memcpy(skey.vip, vip, 16);
	skey.port = bpf_ntohs((__u16)ctx->user_port);
	skey.proto = proto;
	svc = bpf_map_lookup_elem(&porin_lb_svc6, &skey);
	if (!svc)
		return LB_SOCK_PROCEED;
	if (svc->backend_count == 0) {
		bpf_set_retval(-LB_SOCK_ECONNREFUSED);
		return LB_SOCK_REJECT;
	}
	/* As for IPv4, the netns stands for the client (its address is not chosen yet), in
	 * affinity and in the Maglev hash (with the frontend asked for). */
	{
		__u64 netns = bpf_get_netns_cookie(ctx);
		__u8 client[16] = {};

		__builtin_memcpy(client, &netns, sizeof(netns));
		be = lb6_pick_backend(svc, client, 1, lb_sock6_hash(netns, &skey), &backend_id);
	}
	if (!be)
		return LB_SOCK_PROCEED; /* mid-update: the address stays the frontend's */
	__builtin_memcpy(backend, be->addr, 16);
	{
		struct porin_lb_sk6_key rkey = {
			.cookie = bpf_get_socket_cookie(ctx),
			.port = bpf_htons(be->port),
		};
		struct porin_lb_sk6_value rval = {
			.port = (__u16)ctx->user_port,
		};

		__builtin_memcpy(rkey.addr, backend, 16);
		__builtin_memcpy(rval.vip, vip, 16);
		/* LRU: makes room by itself; a failure only costs the VIP in getpeername. */
		bpf_map_update_elem(&porin_lb_sknat6, &rkey, &rval, BPF_ANY);
	}
	lb_sock6_write(ctx, backend);
	ctx->user_port = bpf_htons(be->port);
	return LB_SOCK_PROCEED;
}

/* Reverse translation (recvmsg6, getpeername6): backend -> the frontend asked for. */
static __always_inline int lb_sock6_rev(struct bpf_sock_addr *ctx)
{
	struct porin_lb_sk6_value *rval;
	struct porin_lb_sk6_key rkey = {};
	__u32 vip[4];

	if (!lb_sock_proto(ctx) || ctx->user_family != 10 /* AF_INET6 */)
		return LB_SOCK_PROCEED;
	rkey.cookie = bpf_get_socket_cookie(ctx);
	lb_sock6_read(ctx, rkey.addr);
	rkey.port = (__u16)ctx->user_port;
	rval = bpf_map_lookup_elem(&porin_lb_sknat6, &rkey);
	if (!rval)
		return LB_SOCK_PROCEED;
	__builtin_memcpy(vip, rval->vip, 16);
	lb_sock6_write(ctx, vip);
	ctx->user_port = rval->port;
	return LB_SOCK_PROCEED;
}
