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
