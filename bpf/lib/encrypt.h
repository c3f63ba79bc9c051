/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Encryption in the pod program (encryption plugin). Flows that crossed the tunnel are
 * marked encrypted (CFG_ENABLE_WIREGUARD). Strict mode (CFG_ENCRYPTION_STRICT): a pod's packet to
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
#include "identity.h"

#define ENCRYPT_AF_INET 2
/* In a porin_encrypt value: the key is a peer's node address (a /32), not a pod CIDR; the
 * low bits are still the device's ifindex. */
#define PORIN_ENCRYPT_F_NODE 0x80000000u

/* Where a packet of a local pod (or one the NodePort program SNATed to the node's address)
 * to `dst` (network order) is routed: ENCRYPT_NOT_REMOTE when
 * dst is not another node's pod, ENCRYPT_VIA_TUNNEL when the FIB sends it into the
 * WireGuard device, ENCRYPT_IN_CLEAR otherwise (no peer key: core's plain underlay route;
 * the device down; a route added by hand). With ENCRYPT_VIA_TUNNEL, `*tunnel` is the
 * WireGuard device's ifindex. */
#define ENCRYPT_NOT_REMOTE 0
#define ENCRYPT_VIA_TUNNEL 1
#define ENCRYPT_IN_CLEAR 2

static __always_inline int encrypt_route_via(struct __sk_buff *skb, const struct pkt_info *p,
					     __u32 dst, __u32 *tunnel)
{
	struct porin_encrypt_key key = { .prefixlen = 32, .addr = dst };
	struct bpf_fib_lookup fib = {};
	__u32 *tunnel_ifindex;
	__u32 src;
	long rc;

	*tunnel = 0;
	tunnel_ifindex = bpf_map_lookup_elem(&porin_encrypt, &key);
	if (!tunnel_ifindex || (*tunnel_ifindex & PORIN_ENCRYPT_F_NODE))
		return ENCRYPT_NOT_REMOTE;
	__builtin_memcpy(&src, p->saddr, 4);
	fib.family = ENCRYPT_AF_INET;
	fib.l4_protocol = p->l4_proto;
	fib.ifindex = skb->ifindex;
	fib.ipv4_src = src;
	fib.ipv4_dst = dst;
	rc = bpf_fib_lookup(skb, &fib, sizeof(fib), BPF_FIB_LOOKUP_SKIP_NEIGH);
	if (rc == BPF_FIB_LKUP_RET_SUCCESS && *tunnel_ifindex && fib.ifindex == *tunnel_ifindex) {
		*tunnel = fib.ifindex;
		return ENCRYPT_VIA_TUNNEL;
	}
	return ENCRYPT_IN_CLEAR;
}

/* encrypt_route_via without the device. */
static __always_inline int encrypt_route_of(struct __sk_buff *skb, const struct pkt_info *p,
					    __u32 dst)
{
	__u32 tunnel;

	return encrypt_route_via(skb, p, dst, &tunnel);
}

/* The destination of a pod's packet, network order: `dst_override` (the backend load
 * balancing chose) or the packet's own. */
static __always_inline __u32 encrypt_dst_of(const struct pkt_info *p, __u32 dst_override)
{
	__u32 dst;

	if (dst_override)
		return dst_override;
	__builtin_memcpy(&dst, p->daddr, 4);
	return dst;
}

/* 0, or DROP_UNENCRYPTED. `dst_override` (network order) replaces the destination when
 * load balancing already chose a backend. */
static __always_inline int encrypt_strict_check(struct __sk_buff *skb, const struct pkt_info *p,
						__u32 dst_override)
{
	/* The tunnel carries IPv4 only: IPv6 to any cluster address but this node's own
	 * (another node's pod or the node itself, whatever the route) would leave in clear. */
	if (p->family == PORIN_FAMILY_IPV6) {
		__u32 id = ipcache_identity(p->family, p->daddr);

		if (id != PORIN_IDENTITY_WORLD && id != PORIN_IDENTITY_HOST &&
		    !endpoint_id(p->family, p->daddr))
			return DROP_UNENCRYPTED;
		return 0;
	}
	if (p->family != PORIN_FAMILY_IPV4)
		return 0;
	if (encrypt_route_of(skb, p, encrypt_dst_of(p, dst_override)) == ENCRYPT_IN_CLEAR)
		return DROP_UNENCRYPTED;
	return 0;
}

/* PORIN_EVENT_F_ENCRYPTED when the packet crossed the tunnel: leaving a local pod, it is
 * routed into the WireGuard device; entering one, it came from another node's pod CIDR
 * through that device (the device wrote it, so the packet arrived encrypted). */
static __always_inline __u8 encrypt_flow_flags(struct __sk_buff *skb, const struct pkt_info *p,
					       __u8 direction, __u32 dst_override)
{
	struct porin_encrypt_key key = { .prefixlen = 32 };
	__u32 *tunnel_ifindex;

	if (p->family != PORIN_FAMILY_IPV4)
		return 0;
	if (direction == PORIN_DIR_EGRESS)
		return encrypt_route_of(skb, p, encrypt_dst_of(p, dst_override)) ==
				       ENCRYPT_VIA_TUNNEL
			       ? PORIN_EVENT_F_ENCRYPTED
			       : 0;
	__builtin_memcpy(&key.addr, p->saddr, 4);
	tunnel_ifindex = bpf_map_lookup_elem(&porin_encrypt, &key);
	if (tunnel_ifindex && (*tunnel_ifindex & ~PORIN_ENCRYPT_F_NODE) &&
	    skb->ingress_ifindex == (*tunnel_ifindex & ~PORIN_ENCRYPT_F_NODE))
		return PORIN_EVENT_F_ENCRYPTED;
	return 0;
}

/*
 * A local pod's reply to a peer's node address (the source of a NodePort connection that
 * peer SNATed and sent through the tunnel, lib/nodeport.h) goes back through the tunnel:
 * bpf_redirect into the WireGuard device (L3: the kernel strips the Ethernet header), whose
 * peer allows its own node address. Node addresses are never routed into the device (the
 * tunnel's UDP goes to them), hence the redirect. Returns -1 when the packet is not one.
 */
static __always_inline int encrypt_node_reply(const struct pkt_info *p, __u8 is_reply)
{
	struct porin_encrypt_key key = { .prefixlen = 32 };
	__u32 *value;
	__u32 ifindex;

	if (!is_reply || p->family != PORIN_FAMILY_IPV4)
		return -1;
	__builtin_memcpy(&key.addr, p->daddr, 4);
	value = bpf_map_lookup_elem(&porin_encrypt, &key);
	if (!value || !(*value & PORIN_ENCRYPT_F_NODE))
		return -1;
	ifindex = *value & ~PORIN_ENCRYPT_F_NODE;
	if (!ifindex)
		return -1;
	return (int)bpf_redirect(ifindex, 0);
}
