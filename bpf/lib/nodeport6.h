/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * NodePort, ExternalIPs and LoadBalancer IPs over IPv6 (dual stack, TCP and UDP): the
 * IPv6 counterpart of nodeport.h on the node's external device (host.c, tcx ingress),
 * with the same model:
 *
 * A packet to [node IPv6]:nodePort (porin_lb_svc6, exact address first, then the [::]
 * wildcard when the packet is for CFG_NODE_IPV6_*) or to an IPv6 external or
 * LoadBalancer IP:port (exact frontends) picks a backend of porin_lb_slots6 /
 * porin_lb_backends6:
 *  - local backend (in porin_endpoints): DNAT only; the stack delivers it to the pod and
 *    the pod program reverse-translates the reply (np6_rev_from_pod) and sends it out of
 *    the external device;
 *  - remote backend: DNAT and SNAT to the node's IPv6 address, keeping the client's port
 *    unless another connection to that backend uses it; out of the same device with
 *    bpf_redirect_neigh (the kernel's IPv6 FIB and neighbour lookup). The reply comes back
 *    to this device and is reverse-translated here.
 *  - no backend: the packet becomes a TCP RST (np6_reset) or, for UDP, an ICMPv6 port
 *    unreachable (lb6_reject) from the frontend, sent back out of the device to the
 *    client, so connect() fails at once.
 * Both directions are one porin_np_nat6 / porin_np_rnat6 entry. With the encryption plugin
 * in strict mode a remote IPv6 backend is a DROP_UNENCRYPTED (the WireGuard path of
 * nodeport.h is IPv4 only); otherwise the packet goes out in clear. A new connection's
 * backend is chosen as for IPv6 ClusterIPs (lb6_pick_backend: the client's address for
 * session affinity, the 5-tuple's hash for Maglev, else a random slot).
 */
#pragma once

#include "bpf_api.h"
#include "common.h"
#include "config.h"
#include "conntrack.h"
#include "drop_reasons.h"
#include "lb6.h"
#include "maps.h"
#include "nodeport.h"
#include "parse.h"

/* What an IPv6 NodePort packet becomes (forward: to the backend; reverse: to the client).
 * Addresses in network byte order, ports in host byte order; ifindex as porin_np_nat. */
struct np6_nat {
	__u8 saddr[16];
	__u8 daddr[16];
	__u16 sport;
	__u16 dport;
	__u32 id; /* forward: backend id; reverse: service id */
	__u32 ifindex;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, PORIN_LB_NAT_MAX_ENTRIES);
	__type(key, struct porin_ct_key);
	__type(value, struct np6_nat);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} porin_np_nat6 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, PORIN_LB_NAT_MAX_ENTRIES);
	__type(key, struct porin_ct_key);
	__type(value, struct np6_nat);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} porin_np_rnat6 SEC(".maps");

/* The node's IPv6 address into `ip`; 0 when none is configured. */
static __always_inline int np6_node_ip(__u8 *ip)
{
	__u32 w[4] = { CFG_NODE_IPV6_0, CFG_NODE_IPV6_1, CFG_NODE_IPV6_2, CFG_NODE_IPV6_3 };

	__builtin_memcpy(ip, w, 16);
	return (w[0] | w[1] | w[2] | w[3]) != 0;
}

static __always_inline int np6_same(const __u8 *a, const __u8 *b)
{
	return !__builtin_memcmp(a, b, 16);
}

/* Rewrites source and destination of the packet to what `n` says; updates `p`. */
static __always_inline int np6_rewrite(struct __sk_buff *skb, struct pkt_info *p,
				       const struct np6_nat *n)
{
	int ret;

	ret = lb6_rewrite(skb, p, 1, p->saddr, n->saddr, p->sport, n->sport);
	if (ret < 0)
		return ret;
	ret = lb6_rewrite(skb, p, 0, p->daddr, n->daddr, p->dport, n->dport);
	if (ret < 0)
		return ret;
	__builtin_memcpy(p->saddr, n->saddr, 16);
	__builtin_memcpy(p->daddr, n->daddr, 16);
	p->sport = n->sport;
	p->dport = n->dport;
	return 0;
}

/* The IPv6 NodePort, external or LoadBalancer frontend a packet is for, or NULL. */
static __always_inline struct porin_lb_svc_value *np6_frontend(const struct pkt_info *p)
{
	struct porin_lb_svc6_key key = { .port = p->dport, .proto = p->l4_proto };
	struct porin_lb_svc_value *svc;
	__u8 node[16];

	if (!np6_node_ip(node))
		return 0;
	__builtin_memcpy(key.vip, p->daddr, 16);
	svc = bpf_map_lookup_elem(&porin_lb_svc6, &key);
	if (svc || !np6_same(key.vip, node))
		return svc;
	__builtin_memset(key.vip, 0, 16);
	return bpf_map_lookup_elem(&porin_lb_svc6, &key);
}

/*
 * Records both directions of a new connection (`fwd` filled by np6_select). For SNAT,
 * finds a source port no other connection to the same backend uses. Returns 0 or
 * DROP_CT_MAP_INSERT.
 */
static __always_inline int np6_record(struct __sk_buff *skb, const struct pkt_info *p,
				      struct np6_nat *fwd, __u32 service_id)
{
	struct np6_nat rev = { .id = service_id, .ifindex = skb->ifindex };
	struct porin_ct_key fkey, rkey;
	struct np6_nat *old;
	int i;

	__builtin_memcpy(rev.saddr, p->daddr, 16);
	__builtin_memcpy(rev.daddr, p->saddr, 16);
	rev.sport = p->dport;
	rev.dport = p->sport;
	/* The reply as it will arrive: backend -> translated source. */
	ct_key_from(&rkey, p, 0);
	__builtin_memcpy(rkey.saddr, fwd->daddr, 16);
	rkey.sport = fwd->dport;

#pragma unroll
	for (i = 0; i < NP_SNAT_TRIES; i++) {
		if (i > 0) {
			if (!fwd->ifindex)
				return DROP_CT_MAP_INSERT;
			fwd->sport = NP_PORT_MIN + bpf_get_prandom_u32() % NP_PORT_SPAN;
		}
		__builtin_memcpy(rkey.daddr, fwd->saddr, 16);
		rkey.dport = fwd->sport;
		if (bpf_map_update_elem(&porin_np_rnat6, &rkey, &rev, BPF_NOEXIST) == 0)
			break;
		/* Taken: by this very connection (its forward entry expired)? Reuse. */
		old = bpf_map_lookup_elem(&porin_np_rnat6, &rkey);
		if (old && old->dport == rev.dport && old->sport == rev.sport &&
		    np6_same(old->daddr, rev.daddr) && np6_same(old->saddr, rev.saddr))
			break;
		if (i == NP_SNAT_TRIES - 1)
			return DROP_CT_MAP_INSERT;
	}
	ct_key_from(&fkey, p, 0);
	if (bpf_map_update_elem(&porin_np_nat6, &fkey, fwd, BPF_ANY) < 0)
		return DROP_CT_MAP_INSERT;
	return 0;
}

/* Picks a backend for a new connection and fills the forward translation. */
static __always_inline int np6_select(struct __sk_buff *skb, const struct pkt_info *p,
				      const struct porin_lb_svc_value *svc, struct np6_nat *fwd)
{
	struct porin_endpoint_key local = { .family = PORIN_FAMILY_IPV6 };
	struct porin_lb_backend6 *be;
	__u32 backend_id = 0;

	be = lb6_pick_backend(svc, p->saddr, 0, lb6_tuple_hash(p), &backend_id);
	if (!be)
		return DROP_NO_SERVICE;
	fwd->id = backend_id;
	__builtin_memcpy(fwd->daddr, be->addr, 16);
	fwd->dport = be->port;
	fwd->sport = p->sport;
	__builtin_memcpy(local.addr, be->addr, 16);
	if (bpf_map_lookup_elem(&porin_endpoints, &local)) {
		__builtin_memcpy(fwd->saddr, p->saddr, 16);
		fwd->ifindex = 0;
	} else {
		/* SNAT to this node's address, so the reply comes back here. */
		np6_node_ip(fwd->saddr);
		fwd->ifindex = skb->ifindex;
	}
	return np6_record(skb, p, fwd, svc->service_id);
}

/* The forward translation of a known connection whose backend still exists unchanged. */
static __always_inline int np6_known(const struct pkt_info *p, struct np6_nat *fwd)
{
	struct porin_lb_backend6 *be;
	struct porin_ct_key key;
	struct np6_nat *n;
	__u32 id;

	ct_key_from(&key, p, 0);
	n = bpf_map_lookup_elem(&porin_np_nat6, &key);
	if (!n)
		return 0;
	id = n->id;
	be = bpf_map_lookup_elem(&porin_lb_backends6, &id);
	if (!be || be->port != n->dport || !np6_same(be->addr, n->daddr))
		return 0;
	*fwd = *n;
	return 1;
}

/* The reverse translation of a reply to an IPv6 NodePort connection (keyed by the reply
 * as it arrives) into `n`; 0 when the packet is not one. */
static __always_inline int np6_reply_of(const struct pkt_info *p, struct np6_nat *n)
{
	struct porin_ct_key key;
	struct np6_nat *rev;

	if (!lb6_is_candidate(p))
		return 0;
	ct_key_from(&key, p, 0);
	rev = bpf_map_lookup_elem(&porin_np_rnat6, &key);
	if (!rev)
		return 0;
	*n = *rev;
	return 1;
}

/* A TCP RST answering the offending segment, from the frontend it targeted. */
struct np6_rst {
	struct ipv6hdr ip;
	struct tcphdr tcp;
};

/*
 * A TCP frontend without backends refuses with a RST (np_rst_tcp, RFC 9293 3.10.7.1), sent
 * back out of the device to the client (lb_send_back); why a RST and not an ICMPv6 error:
 * np_reset. A RST is never answered. Returns a TC verdict; the drop was already counted.
 */
static __always_inline int np6_reset(struct __sk_buff *skb, const struct pkt_info *p)
{
	struct lb6_pseudo_hdr ph = {};
	struct np6_rst r = {};
	struct ipv6hdr in_ip;
	struct tcphdr in;
	struct ethhdr eth;
	__u32 seg_len;
	__s64 sum;

	if (p->l4_off != LB_ETH_HLEN + sizeof(struct ipv6hdr))
		return TC_ACT_SHOT;
	if (bpf_skb_load_bytes(skb, 0, &eth, sizeof(eth)) < 0 ||
	    bpf_skb_load_bytes(skb, LB_ETH_HLEN, &in_ip, sizeof(in_ip)) < 0 ||
	    bpf_skb_load_bytes(skb, p->l4_off, &in, sizeof(in)) < 0)
		return TC_ACT_SHOT;
	if (in.rst || bpf_ntohs(in_ip.payload_len) < in.doff * 4)
		return TC_ACT_SHOT;
	seg_len = bpf_ntohs(in_ip.payload_len) - in.doff * 4 + in.syn + in.fin;
	lb_swap_macs(&eth);

	r.ip.version = 6;
	r.ip.payload_len = bpf_htons(sizeof(r.tcp));
	r.ip.nexthdr = IPPROTO_TCP;
	r.ip.hop_limit = 64;
	__builtin_memcpy(&r.ip.saddr, p->daddr, 16); /* the frontend */
	__builtin_memcpy(&r.ip.daddr, p->saddr, 16); /* the client */
	np_rst_tcp(&r.tcp, &in, seg_len, p);
	__builtin_memcpy(ph.saddr, p->daddr, 16);
	__builtin_memcpy(ph.daddr, p->saddr, 16);
	ph.len = bpf_htonl(sizeof(r.tcp));
	ph.nexthdr = IPPROTO_TCP;
	sum = bpf_csum_diff(0, 0, (__be32 *)&r.tcp, sizeof(r.tcp), 0);
	sum = bpf_csum_diff(0, 0, (__be32 *)&ph, sizeof(ph), (__u32)sum);
	r.tcp.check = lb_csum_fold(sum);
	return lb_send_back(skb, &eth, &r, sizeof(r));
}

/* tcx ingress of an external device, IPv6 packets. Returns a TC verdict. */
static __always_inline int np6_from_netdev(struct __sk_buff *skb, struct pkt_info *p)
{
	struct porin_lb_svc_value *svc;
	struct np6_nat n = {};
	int ret;

	if (!lb6_is_candidate(p))
		return TC_ACT_OK;
	/* A reply from a remote backend to a connection we SNATed. */
	if (np6_reply_of(p, &n)) {
		ret = np6_rewrite(skb, p, &n);
		return ret < 0 ? np_drop(skb, ret) : np_forward(n.ifindex);
	}
	svc = np6_frontend(p);
	if (!svc)
		return TC_ACT_OK;
	if (!np6_known(p, &n)) {
		ret = np6_select(skb, p, svc, &n);
		if (ret == DROP_NO_SERVICE) {
			np_drop(skb, ret);
			return p->l4_proto == IPPROTO_TCP ? np6_reset(skb, p) : lb6_reject(skb, p);
		}
		if (ret < 0)
			return np_drop(skb, ret);
	}
	ret = np6_rewrite(skb, p, &n);
	if (ret < 0)
		return np_drop(skb, ret);
	if (n.ifindex && CFG_ENCRYPTION_STRICT)
		return np_drop(skb, DROP_UNENCRYPTED);
	return np_forward(n.ifindex);
}

/* Pod program, from-pod: a local backend's reply to an IPv6 NodePort connection gets the
 * frontend back as its source and leaves by the external device it came in on. Returns -1
 * when the packet is not one, else a TC verdict. */
static __always_inline int np6_rev_from_pod(struct __sk_buff *skb, struct pkt_info *p)
{
	struct np6_nat n;
	int ret;

	if (!np6_reply_of(p, &n))
		return -1;
	ret = np6_rewrite(skb, p, &n);
	return ret < 0 ? np_drop(skb, ret) : np_forward(n.ifindex);
}
