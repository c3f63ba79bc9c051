/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Per-packet load balancing of ClusterIP services (IPv4, TCP and UDP).
 *
 * from-pod: a packet to a frontend (VIP:port/proto in porin_lb_svc) is DNATed
 * to a backend. The backend of a connection is remembered in porin_lb_nat
 * (keyed by the tuple the client sent), so later packets keep it (affinity);
 * a new connection picks a random slot or its 5-tuple's Maglev slot (lb_pick.h:
 * or its client's backend under sessionAffinity: ClientIP). The translated tuple is recorded in
 * porin_lb_rnat so that to-pod, on the client's veth, can restore the VIP as
 * the source of replies: the client only ever sees the service address.
 *
 * Conntrack and flow events on the client's veth see the untranslated tuple
 * (client -> VIP), which is what the client did; the backend's veth sees the
 * translated one.
 */
#pragma once

#include "bpf_api.h"
#include "common.h"
#include "conntrack.h"
#include "drop_reasons.h"
#include "lb_pick.h"
#include "maps.h"
#include "parse.h"

#define LB_ETH_HLEN 14
#define LB_IP_CSUM_OFF (LB_ETH_HLEN + 10)
#define LB_IP_SRC_OFF (LB_ETH_HLEN + 12)
#define LB_IP_DST_OFF (LB_ETH_HLEN + 16)
#define LB_TCP_CSUM_OFF 16
#define LB_UDP_CSUM_OFF 6

#define LB_F_PSEUDO_HDR (1ULL << 4)
#define LB_F_MARK_MANGLED_0 (1ULL << 5)
#define LB_CSUM_LEVEL_RESET 3

#define ICMP_DEST_UNREACH 3
#define ICMP_PORT_UNREACH 3

static long (*bpf_csum_level)(void *skb, __u64 level) = (void *)135;

/* A translation chosen for the current packet. Addresses in network byte order. */
struct lb_xlate {
	__u32 vip;
	__u32 backend_addr;
	__u16 vport;
	__u16 backend_port;
	__u8 active;
};

static __always_inline int lb_is_candidate(const struct pkt_info *p)
{
	return p->family == PORIN_FAMILY_IPV4 && p->has_l4 &&
	       (p->l4_proto == IPPROTO_TCP || p->l4_proto == IPPROTO_UDP);
}

/* The hash of a packet's 5-tuple (addresses as in memory, ports in host order). */
static __always_inline __u32 lb_tuple_hash(const struct pkt_info *p)
{
	__u32 saddr, daddr, h = 0;

	__builtin_memcpy(&saddr, p->saddr, 4);
	__builtin_memcpy(&daddr, p->daddr, 4);
	h = lb_hash_word(h, saddr);
	h = lb_hash_word(h, daddr);
	h = lb_hash_word(h, ((__u32)p->sport << 16) | p->dport);
	h = lb_hash_word(h, p->l4_proto);
	return lb_hash_final(h);
}

/* The translated (client -> backend) tuple, key of porin_lb_rnat. */
static __always_inline void lb_rnat_key(struct porin_ct_key *key, const struct pkt_info *p,
					__u32 backend_addr, __u16 backend_port)
{
	ct_key_from(key, p, 0);
	__builtin_memcpy(key->daddr, &backend_addr, 4);
	key->dport = backend_port;
}

/*
 * Picks the backend for a packet from a pod. Returns 0 (x->active tells whether
 * the packet goes to a service) or DROP_NO_SERVICE.
 */
static __always_inline int lb_select(const struct pkt_info *p, struct lb_xlate *x)
{
	struct porin_lb_svc_key skey = {};
	struct porin_lb_svc_value *svc;
	struct porin_lb_nat_entry *nat;
	struct porin_lb_backend *be;
	struct porin_ct_key ckey;
	__u32 backend_id;

	if (!lb_is_candidate(p))
		return 0;
	__builtin_memcpy(&skey.vip, p->daddr, 4);
	skey.port = p->dport;
	skey.proto = p->l4_proto;
	svc = bpf_map_lookup_elem(&porin_lb_svc, &skey);
	if (!svc)
		return 0;

	x->vip = skey.vip;
	x->vport = p->dport;
	ct_key_from(&ckey, p, 0);

	/*
	 * A translated connection keeps its backend:
	 * - an established TCP connection (not a SYN) always does, even when the backend
	 *   has left the service meanwhile: existing connections finish where they are,
	 *   as with kube-proxy's conntrack entries;
	 * - a new TCP connection reusing the tuple, or UDP, only while that backend still
	 *   exists unchanged (a removed backend is not chosen again).
	 */
	nat = bpf_map_lookup_elem(&porin_lb_nat, &ckey);
	if (nat) {
		int established = p->l4_proto == IPPROTO_TCP && !(p->tcp_flags & TCP_FLAG_SYN);

		backend_id = nat->id;
		be = bpf_map_lookup_elem(&porin_lb_backends, &backend_id);
		if (established || (be && be->addr == nat->addr && be->port == nat->port)) {
			x->backend_addr = nat->addr;
			x->backend_port = nat->port;
			x->active = 1;
			return 0;
		}
	}

	{
		__u32 client;

		__builtin_memcpy(&client, p->saddr, 4);
		be = lb_pick_backend(svc, client, 0, lb_tuple_hash(p), &backend_id);
	}
	if (!be)
		return DROP_NO_SERVICE;
	x->backend_addr = be->addr;
	x->backend_port = be->port;
	x->active = 1;

	{
		struct porin_lb_nat_entry fwd = {
			.addr = be->addr,
			.port = be->port,
			.id = backend_id,
		};
		struct porin_lb_nat_entry rev = {
			.addr = x->vip,
			.port = x->vport,
			.id = svc->service_id,
		};
		struct porin_ct_key rkey;

		/* A failed insert only costs affinity/reverse NAT of this connection: the
		 * LRU maps make room by themselves, so errors are not expected here. */
		bpf_map_update_elem(&porin_lb_nat, &ckey, &fwd, BPF_ANY);
		lb_rnat_key(&rkey, p, be->addr, be->port);
		bpf_map_update_elem(&porin_lb_rnat, &rkey, &rev, BPF_ANY);
	}
	return 0;
}

/*
 * Rewrites the source (is_src) or destination address and port of an IPv4
 * TCP/UDP packet, fixing the IP checksum and the L4 checksum (which covers the
 * addresses through the pseudo-header). Returns 0 or a negative DROP_* reason.
 */
static __always_inline int lb_rewrite(struct __sk_buff *skb, const struct pkt_info *p, int is_src,
				      __u32 old_ip, __u32 new_ip, __u16 old_port_h,
				      __u16 new_port_h)
{
	__u32 ip_off = is_src ? LB_IP_SRC_OFF : LB_IP_DST_OFF;
	__u32 port_off = (__u32)p->l4_off + (is_src ? 0 : 2);
	__u32 csum_off = (__u32)p->l4_off;
	__u64 mangled = 0;
	__be16 old_port = bpf_htons(old_port_h);
	__be16 new_port = bpf_htons(new_port_h);

	if (p->l4_proto == IPPROTO_TCP) {
		csum_off += LB_TCP_CSUM_OFF;
	} else {
		csum_off += LB_UDP_CSUM_OFF;
		/* UDP: a zero checksum means "none" and must stay zero. */
		mangled = LB_F_MARK_MANGLED_0;
	}

	if (old_ip != new_ip) {
		if (bpf_l4_csum_replace(skb, csum_off, old_ip, new_ip,
					LB_F_PSEUDO_HDR | mangled | 4) < 0)
			return DROP_CSUM_L4;
		if (bpf_l3_csum_replace(skb, LB_IP_CSUM_OFF, old_ip, new_ip, 4) < 0)
			return DROP_CSUM_L3;
		if (bpf_skb_store_bytes(skb, ip_off, &new_ip, 4, 0) < 0)
			return DROP_WRITE_ERROR;
	}
	if (old_port != new_port) {
		if (bpf_l4_csum_replace(skb, csum_off, old_port, new_port, mangled | 2) < 0)
			return DROP_CSUM_L4;
		if (bpf_skb_store_bytes(skb, port_off, &new_port, 2, 0) < 0)
			return DROP_WRITE_ERROR;
	}
	return 0;
}

/* DNAT of a packet from a pod to its chosen backend. */
static __always_inline int lb_dnat(struct __sk_buff *skb, const struct pkt_info *p,
				   const struct lb_xlate *x)
{
	return lb_rewrite(skb, p, 0, x->vip, x->backend_addr, x->vport, x->backend_port);
}

/*
 * Reverse NAT of a reply entering a client pod: backend -> VIP as the source.
 * Updates `p` so that conntrack and events see the service address.
 */
static __always_inline int lb_rev_nat(struct __sk_buff *skb, struct pkt_info *p)
{
	struct porin_lb_nat_entry *rev;
	struct porin_ct_key key;
	__u32 old_ip, new_ip;
	int ret;

	if (!lb_is_candidate(p))
		return 0;
	ct_key_from(&key, p, 1);
	rev = bpf_map_lookup_elem(&porin_lb_rnat, &key);
	if (!rev)
		return 0;
	__builtin_memcpy(&old_ip, p->saddr, 4);
	new_ip = rev->addr;
	ret = lb_rewrite(skb, p, 1, old_ip, new_ip, p->sport, rev->port);
	if (ret < 0)
		return ret;
	__builtin_memcpy(p->saddr, &new_ip, 4);
	p->sport = rev->port;
	return 0;
}

static __always_inline __u16 lb_csum_fold(__s64 sum)
{
	__u32 s = (__u32)sum;

	s = (s & 0xffff) + (s >> 16);
	s = (s & 0xffff) + (s >> 16);
	return (__u16)~s;
}

/* Swaps source and destination MAC: an answer goes back to where the packet came from. */
static __always_inline void lb_swap_macs(struct ethhdr *eth)
{
	__u8 mac[ETH_ALEN];

	__builtin_memcpy(mac, eth->h_source, ETH_ALEN);
	__builtin_memcpy(eth->h_source, eth->h_dest, ETH_ALEN);
	__builtin_memcpy(eth->h_dest, mac, ETH_ALEN);
}

/*
 * Replaces the packet by `eth` and the `len` bytes at `l3` (a complete answer: an ICMP
 * error or a TCP RST, its checksums done) and sends it back out of the device it came in
 * on, the egress of skb->ifindex. From the pod program (tc ingress of the pod's host-side
 * veth) that is into the pod; from the node device program (tcx ingress of an external
 * device, nodeport.h) it is back out on the wire, to the client. Returns a TC verdict.
 */
static __always_inline int lb_send_back(struct __sk_buff *skb, const struct ethhdr *eth,
					const void *l3, __u32 len)
{
	if (bpf_skb_change_tail(skb, LB_ETH_HLEN + len, 0) < 0)
		return TC_ACT_SHOT;
	if (bpf_skb_store_bytes(skb, 0, eth, sizeof(*eth), 0) < 0)
		return TC_ACT_SHOT;
	if (bpf_skb_store_bytes(skb, LB_ETH_HLEN, l3, len, 0) < 0)
		return TC_ACT_SHOT;
	/* The checksums are complete now: stop the stack trusting a stale offload state. */
	bpf_csum_level(skb, LB_CSUM_LEVEL_RESET);
	return bpf_redirect(skb->ifindex, 0);
}

/* The IPv4 header of an answer (`tot_len` bytes, host order) from `saddr` to `daddr`,
 * its checksum done. */
static __always_inline void lb_answer_ip(struct iphdr *ip, __u16 tot_len, __u8 protocol,
					 __be32 saddr, __be32 daddr)
{
	ip->version = 4;
	ip->ihl = 5;
	ip->tot_len = bpf_htons(tot_len);
	ip->ttl = 64;
	ip->protocol = protocol;
	ip->saddr = saddr;
	ip->daddr = daddr;
	ip->check = lb_csum_fold(bpf_csum_diff(0, 0, (__be32 *)ip, sizeof(*ip), 0));
}

/* ICMP port unreachable, quoting the offending IP header and 8 bytes of L4. */
struct lb_icmp_reply {
	struct iphdr ip;
	struct icmp_hdr icmp;
	__u8 quote[28];
};

/*
 * A frontend without backends refuses at once instead of letting the client time out:
 * the packet is turned into an ICMP port unreachable from the address it targeted,
 * sent back out of the device it came in on (lb_send_back): a ClusterIP's into
 * the client pod, where TCP connect() then fails with ECONNREFUSED; a UDP NodePort's,
 * external or LoadBalancer IP's (nodeport.h) back to the external client. Only plain
 * 20-byte IPv4 headers are answered. Returns a TC verdict; the drop itself was already
 * counted (and, from a pod, reported).
 */
static __always_inline int lb_reject(struct __sk_buff *skb)
{
	struct lb_icmp_reply r = {};
	__be32 frontend, client;
	struct ethhdr eth;

	if (bpf_skb_load_bytes(skb, 0, &eth, sizeof(eth)) < 0)
		return TC_ACT_SHOT;
	if (bpf_skb_load_bytes(skb, LB_ETH_HLEN, r.quote, sizeof(r.quote)) < 0)
		return TC_ACT_SHOT;
	/* Only plain 20-byte headers are quoted verbatim; anything else is just dropped. */
	if (r.quote[0] != 0x45)
		return TC_ACT_SHOT;
	lb_swap_macs(&eth);

	__builtin_memcpy(&frontend, &r.quote[16], 4);
	__builtin_memcpy(&client, &r.quote[12], 4);
	lb_answer_ip(&r.ip, sizeof(r), IPPROTO_ICMP, frontend, client);
	r.icmp.type = ICMP_DEST_UNREACH;
	r.icmp.code = ICMP_PORT_UNREACH;
	r.icmp.checksum = lb_csum_fold(
		bpf_csum_diff(0, 0, (__be32 *)&r.icmp, sizeof(r.icmp) + sizeof(r.quote), 0));
	return lb_send_back(skb, &eth, &r, sizeof(r));
}
