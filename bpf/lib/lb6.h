/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Per-packet load balancing of IPv6 ClusterIPs (dual stack, TCP and UDP): the IPv6
 * counterpart of lb.h for what the socket hooks do not see (`socket_lb = false`, a
 * process outside the node's cgroup).
 *
 * from-pod: a packet to a frontend in porin_lb_svc6 is DNATed to a backend of
 * porin_lb_slots6/porin_lb_backends6, chosen as lb_pick.h does for IPv4 (lb6_pick_backend:
 * the client's backend under sessionAffinity: ClientIP, keyed by its IPv6 address in
 * porin_lb_affin6; else the Maglev slot of the 5-tuple's hash, lb6_tuple_hash, when
 * CFG_LB_MAGLEV; else a random slot). The backend of a known connection is kept in
 * porin_lb_nat6 as lb.h does. porin_lb_rnat6 lets to-pod restore
 * the VIP as the source of replies. Conntrack, policy events and flow events see the
 * untranslated tuple; policy and encryption strict mode decide against the backend.
 * IPv6 has no header checksum: only the L4 checksum changes, through the pseudo-header.
 * A frontend without backends drops (SERVICE_BACKEND_NOT_FOUND) and refuses with an
 * ICMPv6 port unreachable from the VIP (lb6_reject), so connect() fails at once.
 */
#pragma once

#include "bpf_api.h"
#include "common.h"
#include "conntrack.h"
#include "drop_reasons.h"
#include "lb.h"
#include "maps.h"
#include "parse.h"

#define LB6_IP_SRC_OFF (LB_ETH_HLEN + 8)
#define LB6_IP_DST_OFF (LB_ETH_HLEN + 24)
#define LB6_NAT_MAX_ENTRIES 65536

/* A translated IPv6 connection (forward: the backend; reverse: the frontend). */
struct lb6_nat_entry {
	__u8 addr[16];
	__u16 port; /* host byte order */
	__u16 pad;
	__u32 id;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, LB6_NAT_MAX_ENTRIES);
	__type(key, struct porin_ct_key);
	__type(value, struct lb6_nat_entry);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} porin_lb_nat6 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, LB6_NAT_MAX_ENTRIES);
	__type(key, struct porin_ct_key);
	__type(value, struct lb6_nat_entry);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} porin_lb_rnat6 SEC(".maps");

/* The translation chosen for the current packet. */
struct lb6_xlate {
	__u8 backend[16];
	__u16 backend_port;
	__u8 active;
};

static __always_inline int lb6_is_candidate(const struct pkt_info *p)
{
	return p->family == PORIN_FAMILY_IPV6 && p->has_l4 &&
	       (p->l4_proto == IPPROTO_TCP || p->l4_proto == IPPROTO_UDP);
}

/* The hash of a packet's IPv6 5-tuple for Maglev: lb_tuple_hash's words with each
 * address as four (lb_hash_addr6). */
static __always_inline __u32 lb6_tuple_hash(const struct pkt_info *p)
{
	__u32 h = 0;

	h = lb_hash_addr6(h, p->saddr);
	h = lb_hash_addr6(h, p->daddr);
	h = lb_hash_word(h, ((__u32)p->sport << 16) | p->dport);
	h = lb_hash_word(h, p->l4_proto);
	return lb_hash_final(h);
}

/* Picks the backend of a packet from a pod. Returns 0 (x->active: to a service) or
 * DROP_NO_SERVICE. */
static __always_inline int lb6_select(const struct pkt_info *p, struct lb6_xlate *x)
{
	struct porin_lb_svc6_key skey = {};
	struct porin_lb_svc_value *svc;
	struct porin_lb_backend6 *be;
	struct lb6_nat_entry *nat;
	struct porin_ct_key ckey;
	__u32 backend_id;

	if (!lb6_is_candidate(p))
		return 0;
	__builtin_memcpy(skey.vip, p->daddr, 16);
	skey.port = p->dport;
	skey.proto = p->l4_proto;
	svc = bpf_map_lookup_elem(&porin_lb_svc6, &skey);
	if (!svc)
		return 0;
	ct_key_from(&ckey, p, 0);
	/* A known connection keeps its backend: an established TCP one always, a new one or
	 * UDP while that backend still exists unchanged (as lb.h). */
	nat = bpf_map_lookup_elem(&porin_lb_nat6, &ckey);
	if (nat) {
		int established = p->l4_proto == IPPROTO_TCP && !(p->tcp_flags & TCP_FLAG_SYN);
		__u32 nat_id = nat->id;

		be = bpf_map_lookup_elem(&porin_lb_backends6, &nat_id);
		if (established || (be && be->port == nat->port &&
				    !__builtin_memcmp(be->addr, nat->addr, 16))) {
			__builtin_memcpy(x->backend, nat->addr, 16);
			x->backend_port = nat->port;
			x->active = 1;
			return 0;
		}
	}
	be = lb6_pick_backend(svc, p->saddr, 0, lb6_tuple_hash(p), &backend_id);
	if (!be)
		return DROP_NO_SERVICE;
	__builtin_memcpy(x->backend, be->addr, 16);
	x->backend_port = be->port;
	x->active = 1;
	{
		struct lb6_nat_entry fwd = { .port = be->port, .id = backend_id };
		struct lb6_nat_entry rev = { .port = p->dport, .id = svc->service_id };
		struct porin_ct_key rkey;

		__builtin_memcpy(fwd.addr, be->addr, 16);
		__builtin_memcpy(rev.addr, p->daddr, 16);
		/* LRU maps make room by themselves: a failure only costs this connection. */
		bpf_map_update_elem(&porin_lb_nat6, &ckey, &fwd, BPF_ANY);
		ct_key_from(&rkey, p, 0);
		__builtin_memcpy(rkey.daddr, be->addr, 16);
		rkey.dport = be->port;
		bpf_map_update_elem(&porin_lb_rnat6, &rkey, &rev, BPF_ANY);
	}
	return 0;
}

/* Rewrites the source (is_src) or destination address and port of an IPv6 TCP/UDP
 * packet and fixes the L4 checksum (the addresses count through the pseudo-header).
 * Returns 0 or a negative DROP_* reason. */
static __always_inline int lb6_rewrite(struct __sk_buff *skb, const struct pkt_info *p, int is_src,
				       const __u8 *old_ip, const __u8 *new_ip, __u16 old_port_h,
				       __u16 new_port_h)
{
	__u32 ip_off = is_src ? LB6_IP_SRC_OFF : LB6_IP_DST_OFF;
	__u32 port_off = (__u32)p->l4_off + (is_src ? 0 : 2);
	__u32 csum_off = (__u32)p->l4_off +
			 (p->l4_proto == IPPROTO_TCP ? LB_TCP_CSUM_OFF : LB_UDP_CSUM_OFF);
	__be16 old_port = bpf_htons(old_port_h);
	__be16 new_port = bpf_htons(new_port_h);
	__u32 old_w[4], new_w[4];
	int i;

	__builtin_memcpy(old_w, old_ip, 16);
	__builtin_memcpy(new_w, new_ip, 16);
#pragma unroll
	for (i = 0; i < 4; i++) {
		if (old_w[i] == new_w[i])
			continue;
		if (bpf_l4_csum_replace(skb, csum_off, old_w[i], new_w[i], LB_F_PSEUDO_HDR | 4) < 0)
			return DROP_CSUM_L4;
	}
	if (bpf_skb_store_bytes(skb, ip_off, new_w, 16, 0) < 0)
		return DROP_WRITE_ERROR;
	if (old_port != new_port) {
		if (bpf_l4_csum_replace(skb, csum_off, old_port, new_port, 2) < 0)
			return DROP_CSUM_L4;
		if (bpf_skb_store_bytes(skb, port_off, &new_port, 2, 0) < 0)
			return DROP_WRITE_ERROR;
	}
	return 0;
}

/* DNAT of a packet from a pod to its chosen backend. */
static __always_inline int lb6_dnat(struct __sk_buff *skb, const struct pkt_info *p,
				    const struct lb6_xlate *x)
{
	return lb6_rewrite(skb, p, 0, p->daddr, x->backend, p->dport, x->backend_port);
}

/* Reverse NAT of a reply entering a client pod: backend -> VIP as the source; updates `p`
 * so conntrack and events see the service address. */
static __always_inline int lb6_rev_nat(struct __sk_buff *skb, struct pkt_info *p)
{
	struct lb6_nat_entry *rev;
	struct porin_ct_key key;
	__u8 vip[16];
	int ret;

	if (!lb6_is_candidate(p))
		return 0;
	ct_key_from(&key, p, 1);
	rev = bpf_map_lookup_elem(&porin_lb_rnat6, &key);
	if (!rev)
		return 0;
	__builtin_memcpy(vip, rev->addr, 16);
	ret = lb6_rewrite(skb, p, 1, p->saddr, vip, p->sport, rev->port);
	if (ret < 0)
		return ret;
	__builtin_memcpy(p->saddr, vip, 16);
	p->sport = rev->port;
	return 0;
}

#define ICMPV6_DEST_UNREACH 1
#define ICMPV6_PORT_UNREACH 4
#define LB6_QUOTE_LEN 48 /* the offending IPv6 header and 8 bytes of its L4 header */

/* ICMPv6 port unreachable, quoting the offending packet's start. */
struct lb6_icmp_reply {
	struct ipv6hdr ip;
	struct icmp_hdr icmp;
	__u8 quote[LB6_QUOTE_LEN];
};

/* The ICMPv6 checksum's pseudo-header (RFC 8200, 8.1). */
struct lb6_pseudo_hdr {
	__u8 saddr[16];
	__u8 daddr[16];
	__be32 len;
	__u8 zero[3];
	__u8 nexthdr;
};

/*
 * A frontend without backends refuses at once: the packet becomes an ICMPv6 port
 * unreachable from the address it targeted, sent back out of the device it came in on
 * (lb_send_back): a ClusterIP's into the client pod (TCP connect() then fails with
 * ECONNREFUSED), a UDP NodePort's (nodeport6.h) back to the external client. Only packets
 * without extension headers are quoted; others are dropped. Returns a TC verdict; the
 * drop itself was already counted (and, from a pod, reported).
 */
static __always_inline int lb6_reject(struct __sk_buff *skb, const struct pkt_info *p)
{
	struct lb6_icmp_reply r = {};
	struct lb6_pseudo_hdr ph = {};
	struct ethhdr eth;
	__s64 sum;

	if (p->l4_off != LB_ETH_HLEN + sizeof(struct ipv6hdr))
		return TC_ACT_SHOT;
	if (bpf_skb_load_bytes(skb, 0, &eth, sizeof(eth)) < 0)
		return TC_ACT_SHOT;
	if (bpf_skb_load_bytes(skb, LB_ETH_HLEN, r.quote, sizeof(r.quote)) < 0)
		return TC_ACT_SHOT;
	lb_swap_macs(&eth);

	r.ip.version = 6;
	r.ip.payload_len = bpf_htons(sizeof(r.icmp) + sizeof(r.quote));
	r.ip.nexthdr = IPPROTO_ICMPV6;
	r.ip.hop_limit = 64;
	__builtin_memcpy(&r.ip.saddr, p->daddr, 16); /* the frontend */
	__builtin_memcpy(&r.ip.daddr, p->saddr, 16); /* the client */
	r.icmp.type = ICMPV6_DEST_UNREACH;
	r.icmp.code = ICMPV6_PORT_UNREACH;
	__builtin_memcpy(ph.saddr, p->daddr, 16);
	__builtin_memcpy(ph.daddr, p->saddr, 16);
	ph.len = bpf_htonl(sizeof(r.icmp) + sizeof(r.quote));
	ph.nexthdr = IPPROTO_ICMPV6;
	sum = bpf_csum_diff(0, 0, (__be32 *)&r.icmp, sizeof(r.icmp) + sizeof(r.quote), 0);
	sum = bpf_csum_diff(0, 0, (__be32 *)&ph, sizeof(ph), (__u32)sum);
	r.icmp.checksum = lb_csum_fold(sum);
	return lb_send_back(skb, &eth, &r, sizeof(r));
}
