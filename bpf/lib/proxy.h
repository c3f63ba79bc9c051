/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Proxy redirection (part of CFG_ENABLE_POLICY): connections whose policy verdict carries
 * a proxy port (DNS rules, HTTP rules) go to the node's proxies instead of their
 * destination.
 *
 * Mechanism: DNAT in the pod program, not TPROXY. The packet leaving the pod is rewritten
 * to {CFG_NODE_IPV4, proxy port}, where the proxy listens in the node's network namespace
 * like any local service, and the original destination is recorded in porin_proxy_redir
 * keyed by the client's {address, port, protocol}: the proxy's peer address is that key.
 * The proxy's replies leave the node through the same veth, where porin_to_pod puts the
 * original destination back as their source before load balancing's reverse translation
 * and conntrack, so the pod only ever sees the address it sent to. No fwmark, no ip rule,
 * no IP_TRANSPARENT socket: nothing in the node's routing changes.
 *
 * Only the packet that opens a connection is decided (it writes the entry); later packets
 * of the same client tuple to the same destination follow the entry. Egress, IPv4, TCP
 * and UDP.
 *
 * Fallback while no proxy listens (the agent, which runs the proxies, is restarting):
 * before each DNAT the program looks the proxy's socket up in the node's namespace
 * (bpf_sk_lookup_tcp/udp). Without one the packet goes to its original destination,
 * which the L3/L4 part of the same allow entry permits: lookups keep working, without
 * name filtering and without learning new FQDN addresses until the proxy is back.
 */
#pragma once

#include "bpf_api.h"
#include "common.h"
#include "config.h"
#include "drop_reasons.h"
#include "lb.h"
#include "maps.h"
#include "parse.h"
#include "policy.h"

static __always_inline void proxy_key_of(struct porin_proxy_key *k, __u32 addr, __u16 port,
					 __u8 proto)
{
	k->client_addr = addr;
	k->client_port = port;
	k->proto = proto;
	k->pad = 0;
}

/* The destination a packet leaving the pod really goes to: the backend chosen by load
 * balancing, or its own destination. */
static __always_inline void proxy_effective_dst(const struct pkt_info *p, const struct lb_xlate *lb,
						__u32 *daddr, __u16 *dport)
{
	if (lb->active) {
		*daddr = lb->backend_addr;
		*dport = lb->backend_port;
	} else {
		__builtin_memcpy(daddr, p->daddr, 4);
		*dport = p->dport;
	}
}

/* A new egress connection was allowed with `proxy_port` (0: without): records (or forgets)
 * its redirection. Returns 0 or a negative drop reason. */
static __always_inline int proxy_record(const struct pkt_info *p, const struct lb_xlate *lb,
					const struct policy_tuple *pol, __u16 proxy_port)
{
	struct porin_proxy_value v = {};
	struct porin_proxy_key k;
	__u32 saddr;

	if (p->family != PORIN_FAMILY_IPV4 || !p->has_l4 ||
	    (p->l4_proto != IPPROTO_TCP && p->l4_proto != IPPROTO_UDP)) {
		return proxy_port ? DROP_PROXY_UNSUPPORTED : 0;
	}
	__builtin_memcpy(&saddr, p->saddr, 4);
	proxy_key_of(&k, saddr, p->sport, p->l4_proto);
	if (!proxy_port) {
		bpf_map_delete_elem(&porin_proxy_redir, &k);
		return 0;
	}
	if (!CFG_NODE_IPV4)
		return DROP_PROXY_UNSUPPORTED;
	proxy_effective_dst(p, lb, &v.orig_daddr, &v.orig_dport);
	v.proxy_port = proxy_port;
	v.endpoint_id = pol->endpoint_id;
	v.dst_identity = pol->peer_identity;
	if (bpf_map_update_elem(&porin_proxy_redir, &k, &v, BPF_ANY) < 0)
		return DROP_PROXYMAP;
	return 0;
}

/* Whether a proxy socket for {CFG_NODE_IPV4, proxy_port} exists in the node's namespace. */
static __always_inline int proxy_listening(struct __sk_buff *skb, const struct pkt_info *p,
					   __u32 saddr, __u16 proxy_port)
{
	struct bpf_sock_tuple tuple = {};
	struct bpf_sock *sk;

	tuple.ipv4.saddr = saddr;
	tuple.ipv4.sport = bpf_htons(p->sport);
	tuple.ipv4.daddr = CFG_NODE_IPV4;
	tuple.ipv4.dport = bpf_htons(proxy_port);
	if (p->l4_proto == IPPROTO_TCP)
		sk = bpf_sk_lookup_tcp(skb, &tuple, sizeof(tuple.ipv4), BPF_F_CURRENT_NETNS, 0);
	else
		sk = bpf_sk_lookup_udp(skb, &tuple, sizeof(tuple.ipv4), BPF_F_CURRENT_NETNS, 0);
	if (!sk)
		return 0;
	bpf_sk_release(sk);
	return 1;
}

/* Egress: DNATs a packet of a redirected connection to the node's proxy. Returns 1 when
 * redirected, 0 when not (no redirection, or no proxy listening: fallback), or a negative
 * drop reason. */
static __always_inline int proxy_redirect(struct __sk_buff *skb, struct pkt_info *p,
					  const struct lb_xlate *lb)
{
	struct porin_proxy_value *v;
	struct porin_proxy_key k;
	__u32 saddr, daddr, wire_daddr;
	__u16 dport;
	int ret;

	if (p->family != PORIN_FAMILY_IPV4 || !p->has_l4 ||
	    (p->l4_proto != IPPROTO_TCP && p->l4_proto != IPPROTO_UDP))
		return 0;
	__builtin_memcpy(&saddr, p->saddr, 4);
	proxy_key_of(&k, saddr, p->sport, p->l4_proto);
	v = bpf_map_lookup_elem(&porin_proxy_redir, &k);
	if (!v)
		return 0;
	proxy_effective_dst(p, lb, &daddr, &dport);
	if (v->orig_daddr != daddr || v->orig_dport != dport)
		return 0;
	if (!proxy_listening(skb, p, saddr, v->proxy_port))
		return 0;
	__builtin_memcpy(&wire_daddr, p->daddr, 4);
	ret = lb_rewrite(skb, p, 0, wire_daddr, CFG_NODE_IPV4, p->dport, v->proxy_port);
	if (ret < 0)
		return ret;
	return 1;
}

/* Ingress (to the pod): a reply of the node's proxy gets the original destination back as
 * its source. Returns 0 or a negative drop reason. */
static __always_inline int proxy_rev_nat(struct __sk_buff *skb, struct pkt_info *p)
{
	struct porin_proxy_value *v;
	struct porin_proxy_key k;
	__u32 saddr, daddr;
	int ret;

	if (!CFG_NODE_IPV4 || p->family != PORIN_FAMILY_IPV4 || !p->has_l4 ||
	    (p->l4_proto != IPPROTO_TCP && p->l4_proto != IPPROTO_UDP))
		return 0;
	__builtin_memcpy(&saddr, p->saddr, 4);
	if (saddr != CFG_NODE_IPV4)
		return 0;
	__builtin_memcpy(&daddr, p->daddr, 4);
	proxy_key_of(&k, daddr, p->dport, p->l4_proto);
	v = bpf_map_lookup_elem(&porin_proxy_redir, &k);
	if (!v || v->proxy_port != p->sport)
		return 0;
	ret = lb_rewrite(skb, p, 1, saddr, v->orig_daddr, p->sport, v->orig_dport);
	if (ret < 0)
		return ret;
	__builtin_memcpy(p->saddr, &v->orig_daddr, 4);
	p->sport = v->orig_dport;
	return 0;
}

/*
 * Ingress redirection (the destination's ingress rules carry a proxy port): TCP only.
 *
 * A connection entering a pod is judged in porin_to_pod (tcx egress of the pod's host-side
 * veth), after the node already routed it to the pod; the client may be a pod of this node
 * or of another one (through the underlay or WireGuard). The proxy must see the client's
 * real address and answer with the pod's address, so the packet is not rewritten: like
 * Cilium's TPROXY path, it is handed to the proxy's socket as it is.
 *
 *   1. porin_to_pod records the connection in porin_proxy_redir (client tuple -> pod
 *      address and port, proxy port), marks the packet PORIN_MARK_TO_PROXY with the proxy
 *      port in the upper 16 bits, gives it the veth's own MAC as destination and redirects
 *      it to the ingress of the same veth.
 *   2. porin_from_pod sees the mark first (a pod's own packets never carry one: crossing
 *      into the node's namespace clears it) and assigns the packet to the proxy's socket
 *      (bpf_sk_assign): the connection's socket once accepted, else the proxy's listener on
 *      {CFG_NODE_IPV4, proxy port}.
 *   3. The node's routing delivers it locally: `ip rule fwmark 0x200/0xf00 lookup 2004`
 *      with `local 0.0.0.0/0 dev lo` in table 2004 (Cilium's rule and table), installed by
 *      the policy plugin with the L7 proxy. The listener is IP_TRANSPARENT, so the accepted
 *      socket is {client} <-> {pod address, port}: its replies leave with the pod's address
 *      and are routed to the client like the pod's own, with nothing to translate back.
 *   4. The proxy's connection to the pod carries PORIN_MARK_FROM_INGRESS_PROXY (SO_MARK):
 *      porin_to_pod neither judges it again (the proxy applied the pod's ingress rules to
 *      the client) nor redirects it.
 *
 * Fallback as for egress: without a listening proxy the packet goes on to the pod.
 */

/* Ingress entries of porin_proxy_redir have their key's `pad` byte set: the client of an
 * ingress redirection may be a pod of this node, whose own egress entries (pad 0, the key
 * porin_from_pod and the proxy look up) must not be confused with it. */
#define PROXY_KEY_INGRESS 1

static __always_inline void proxy_ingress_key_of(struct porin_proxy_key *k, __u32 addr,
						 __u16 port)
{
	proxy_key_of(k, addr, port, IPPROTO_TCP);
	k->pad = PROXY_KEY_INGRESS;
}

/* skb->mark values, Cilium's magic marks under 0xf00. */
#define PORIN_MARK_MAGIC_MASK 0x0f00
#define PORIN_MARK_TO_PROXY 0x0200
#define PORIN_MARK_FROM_INGRESS_PROXY 0x0a00

#ifndef BPF_F_INGRESS
#define BPF_F_INGRESS 1
#endif

/* The packet was sent by the node's L7 proxy on behalf of a client it already judged. */
static __always_inline int proxy_from_ingress_proxy(const struct __sk_buff *skb)
{
	return (skb->mark & PORIN_MARK_MAGIC_MASK) == PORIN_MARK_FROM_INGRESS_PROXY;
}

/* The packet was handed back by porin_to_pod for delivery to the proxy (step 2). */
static __always_inline int proxy_to_proxy_marked(const struct __sk_buff *skb)
{
	return (skb->mark & PORIN_MARK_MAGIC_MASK) == PORIN_MARK_TO_PROXY;
}

static __always_inline int proxy_ingress_tcp_v4(const struct pkt_info *p)
{
	return p->family == PORIN_FAMILY_IPV4 && p->has_l4 && p->l4_proto == IPPROTO_TCP;
}

/* A new ingress connection was allowed with `proxy_port` (0: without): records (or forgets)
 * its redirection. Other protocols than TCP are not redirected on ingress (their proxy
 * port is ignored: the L3/L4 allow stands). Returns 0 or a negative drop reason. */
static __always_inline int proxy_record_ingress(const struct pkt_info *p,
						const struct policy_tuple *pol, __u16 proxy_port)
{
	struct porin_proxy_value *old;
	struct porin_proxy_value v = {};
	struct porin_proxy_key k;
	__u32 saddr, daddr;

	/* The proxy serves IPv4 only: an L7 rule must never let IPv6 through unfiltered. */
	if (proxy_port && p->family == PORIN_FAMILY_IPV6 && p->l4_proto == IPPROTO_TCP)
		return DROP_PROXY_UNSUPPORTED;
	if (!proxy_ingress_tcp_v4(p))
		return 0;
	__builtin_memcpy(&saddr, p->saddr, 4);
	__builtin_memcpy(&daddr, p->daddr, 4);
	proxy_ingress_key_of(&k, saddr, p->sport);
	if (!proxy_port || !CFG_NODE_IPV4) {
		/* A reused client port must not follow an old redirection to this pod. */
		old = bpf_map_lookup_elem(&porin_proxy_redir, &k);
		if (old && old->orig_daddr == daddr && old->orig_dport == p->dport)
			bpf_map_delete_elem(&porin_proxy_redir, &k);
		return 0;
	}
	v.orig_daddr = daddr;
	v.orig_dport = p->dport;
	v.proxy_port = proxy_port;
	v.endpoint_id = pol->endpoint_id;   /* the server's endpoint */
	v.dst_identity = pol->peer_identity; /* on ingress: the client's identity */
	if (bpf_map_update_elem(&porin_proxy_redir, &k, &v, BPF_ANY) < 0)
		return DROP_PROXYMAP;
	return 0;
}

/* Ingress, step 1: hands a packet of a redirected connection back to the node for the
 * proxy. Returns 0 when not redirected (no redirection, the proxy's own connection, or no
 * proxy listening: fallback), a TC action when redirected, or a negative drop reason. */
static __always_inline int proxy_redirect_ingress(struct __sk_buff *skb, const struct pkt_info *p)
{
	struct porin_proxy_value *v;
	struct porin_proxy_key k;
	__u32 saddr, daddr;
	__u8 mac[6];

	if (!CFG_NODE_IPV4 || !proxy_ingress_tcp_v4(p) || proxy_from_ingress_proxy(skb))
		return 0;
	__builtin_memcpy(&saddr, p->saddr, 4);
	__builtin_memcpy(&daddr, p->daddr, 4);
	proxy_ingress_key_of(&k, saddr, p->sport);
	v = bpf_map_lookup_elem(&porin_proxy_redir, &k);
	if (!v || v->orig_daddr != daddr || v->orig_dport != p->dport || !v->proxy_port)
		return 0;
	if (!proxy_listening(skb, p, saddr, v->proxy_port))
		return 0;
	/* Received on the veth it left through: addressed to that veth's MAC (the source of a
	 * packet the node sends to the pod), or the stack would take it for another host. */
	if (bpf_skb_load_bytes(skb, 6, mac, sizeof(mac)) < 0 ||
	    bpf_skb_store_bytes(skb, 0, mac, sizeof(mac), 0) < 0)
		return DROP_WRITE_ERROR;
	skb->mark = PORIN_MARK_TO_PROXY | ((__u32)v->proxy_port << 16);
	return (int)bpf_redirect(skb->ifindex, BPF_F_INGRESS);
}

/* Ingress, step 2 (porin_from_pod, for a packet marked PORIN_MARK_TO_PROXY): assigns it to
 * the proxy's socket. Returns a TC action or a negative drop reason. */
static __always_inline int proxy_assign_ingress(struct __sk_buff *skb, const struct pkt_info *p)
{
	struct bpf_sock_tuple tuple = {};
	struct bpf_sock *sk;
	long ret;

	if (!proxy_ingress_tcp_v4(p))
		return DROP_PROXY_UNSUPPORTED;
	__builtin_memcpy(&tuple.ipv4.saddr, p->saddr, 4);
	__builtin_memcpy(&tuple.ipv4.daddr, p->daddr, 4);
	tuple.ipv4.sport = bpf_htons(p->sport);
	tuple.ipv4.dport = bpf_htons(p->dport);
	/* The accepted connection (or its handshake) first: its socket has the pod's address. */
	sk = bpf_skc_lookup_tcp(skb, &tuple, sizeof(tuple.ipv4), BPF_F_CURRENT_NETNS, 0);
	if (sk) {
		if (sk->state != BPF_TCP_LISTEN && sk->state != BPF_TCP_TIME_WAIT)
			goto assign;
		bpf_sk_release(sk);
	}
	/* A new connection: the proxy's listener. */
	tuple.ipv4.daddr = CFG_NODE_IPV4;
	tuple.ipv4.dport = bpf_htons((__u16)(skb->mark >> 16));
	sk = bpf_skc_lookup_tcp(skb, &tuple, sizeof(tuple.ipv4), BPF_F_CURRENT_NETNS, 0);
	if (!sk)
		return DROP_SOCKET_LOOKUP;
	if (sk->state != BPF_TCP_LISTEN) {
		bpf_sk_release(sk);
		return DROP_SOCKET_LOOKUP;
	}
assign:
	ret = bpf_sk_assign(skb, sk, 0);
	bpf_sk_release(sk);
	if (ret < 0)
		return DROP_SOCKET_ASSIGN;
	return TC_ACT_OK;
}
