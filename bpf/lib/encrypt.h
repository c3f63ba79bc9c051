/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Encryption strict mode (CFG_ENCRYPTION_STRICT, encryption plugin): a pod's packet to
 * another node's pod CIDR must leave this node through the WireGuard device. The plugin
 * keeps every other node's pod CIDR in porin_encrypt with the device's ifindex; the
 * program asks the FIB where the packet would go (as the kernel will route it after the
 * program returns) and drops it with DROP_UNENCRYPTED when that is anywhere else: no
 * peer key (core's plain underlay route), the device down (no route, or a default route
 * to the underlay), a route added by hand. Only IPv4 pod egress is checked; replies are
 * pod egress on the other side and checked there. Needs BPF_FIB_LOOKUP_SKIP_NEIGH
 * (Linux 6.3): a TUN device has no neighbours.
 */
#pragma once

#include "bpf_api.h"
#include "common.h"
#include "drop_reasons.h"
#include "maps.h"
#include "parse.h"

#define ENCRYPT_AF_INET 2

/* 0, or DROP_UNENCRYPTED. `dst_override` (network order) replaces the destination when
 * load balancing already chose a backend. */
static __always_inline int encrypt_strict_check(struct __sk_buff *skb, const struct pkt_info *p,
						__u32 dst_override)
{
	struct porin_encrypt_key key = { .prefixlen = 32 };
	struct bpf_fib_lookup fib = {};
	__u32 *tunnel_ifindex;
	__u32 src, dst;
	long rc;

	if (p->family != PORIN_FAMILY_IPV4)
		return 0;
	__builtin_memcpy(&src, p->saddr, 4);
	__builtin_memcpy(&dst, p->daddr, 4);
	if (dst_override)
		dst = dst_override;
	key.addr = dst;
	tunnel_ifindex = bpf_map_lookup_elem(&porin_encrypt, &key);
	if (!tunnel_ifindex)
		return 0; /* not another node's pod: not ours to judge */

	fib.family = ENCRYPT_AF_INET;
	fib.l4_protocol = p->l4_proto;
	fib.ifindex = skb->ifindex;
	fib.ipv4_src = src;
	fib.ipv4_dst = dst;
	rc = bpf_fib_lookup(skb, &fib, sizeof(fib), BPF_FIB_LOOKUP_SKIP_NEIGH);
	if (rc == BPF_FIB_LKUP_RET_SUCCESS && *tunnel_ifindex && fib.ifindex == *tunnel_ifindex)
		return 0;
	return DROP_UNENCRYPTED;
}
