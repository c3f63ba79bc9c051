/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * NodePort (IPv4, TCP and UDP) for clients outside the cluster, on the node's
 * external device (host.c, tcx ingress). IPv6: nodeport6.h, the same model.
 *
 * A packet to NodeIP:nodePort (porin_lb_svc, exact address first, then the
 * 0.0.0.0 wildcard when the packet is for CFG_NODE_IPV4) or to an external or
 * LoadBalancer IP:port (exact frontends, routed to this node) picks a backend like
 * ClusterIP traffic does (same slots, same backend ids):
 *  - local backend (in porin_endpoints): DNAT only; the stack delivers it to the
 *    pod, whose program sees client -> backend. The reply is reverse-translated
 *    by the pod program (np_rev_from_pod) and sent out of the external device.
 *  - remote backend: DNAT and SNAT to this node's address (CFG_NODE_IPV4),
 *    keeping the client's port unless another connection already uses it; the
 *    packet leaves the same device with bpf_redirect_neigh (FIB + neighbour), or,
 *    with encryption on, enters the WireGuard device (np_forward_remote). The
 *    backend's pod sees node IP -> backend. The reply comes back to this device (over
 *    the underlay: the backend's node routes node addresses there) and is
 *    reverse-translated here, then redirected to the client.
 *  - no backend: the drop is counted (DROP_NO_SERVICE) and the packet becomes a TCP RST
 *    (np_reset) or, for UDP, an ICMP port unreachable (lb_reject, the ClusterIP one) from
 *    the frontend, sent back out of the device to the client, so connect() fails at once
 *    instead of timing out. Only plain 20-byte IPv4 headers are answered; others drop.
 *
 * Both directions are one porin_np_nat / porin_np_rnat entry (common.h): the
 * forward entry keeps a connection on its backend, the reverse one is keyed by
 * the reply exactly as it arrives. Anything else passes untouched.
 */
#pragma once

#include "bpf_api.h"
#include "common.h"
#include "config.h"
#include "conntrack.h"
#include "drop_reasons.h"
#include "encrypt.h"
#include "lb.h"
#include "maps.h"
#include "metrics.h"
#include "parse.h"

/* Ephemeral range for SNAT ports when the client's port is taken. */
#define NP_PORT_MIN 32768
#define NP_PORT_SPAN 28232
#define NP_SNAT_TRIES 4

/* Rewrites source and destination of the packet to what `n` says; updates `p`. */
static __always_inline int np_rewrite(struct __sk_buff *skb, struct pkt_info *p,
				      const struct porin_np_nat *n)
{
	__u32 old_s, old_d;
	int ret;

	__builtin_memcpy(&old_s, p->saddr, 4);
	__builtin_memcpy(&old_d, p->daddr, 4);
	ret = lb_rewrite(skb, p, 1, old_s, n->saddr, p->sport, n->sport);
	if (ret < 0)
		return ret;
	ret = lb_rewrite(skb, p, 0, old_d, n->daddr, p->dport, n->dport);
	if (ret < 0)
		return ret;
	__builtin_memcpy(p->saddr, &n->saddr, 4);
	__builtin_memcpy(p->daddr, &n->daddr, 4);
	p->sport = n->sport;
	p->dport = n->dport;
	return 0;
}

/* Counts a NodePort drop (no events: the external device has no endpoint). */
static __always_inline int np_drop(struct __sk_buff *skb, int reason)
{
	metrics_update((__u8)(-reason), PORIN_DIR_INGRESS, skb->len);
	return TC_ACT_SHOT;
}

/* Sends a rewritten packet on: out of `ifindex`, or up the stack when 0. */
static __always_inline int np_forward(__u32 ifindex)
{
	if (!ifindex)
		return TC_ACT_OK;
	return (int)bpf_redirect_neigh(ifindex, 0, 0, 0);
}

/*
 * Sends a packet SNATed to a remote backend on (`p` and `n` already rewritten). With the
 * encryption plugin on and the backend's node routed through the WireGuard device (what
 * the pod programs check with the same FIB lookup, lib/encrypt.h), the packet goes into
 * the tunnel: bpf_redirect to the device's egress (an L3 device: the kernel strips the
 * Ethernet header). Peers list each other's node address in their allowed IPs, so the
 * backend's node accepts the node-IP source. In strict mode a backend that would be
 * reached in clear is a DROP_UNENCRYPTED. Otherwise out of the device it came in on.
 */
static __always_inline int np_forward_remote(struct __sk_buff *skb, struct pkt_info *p,
					     const struct porin_np_nat *n)
{
	__u32 tunnel = 0;
	int route;

	if (CFG_ENABLE_WIREGUARD && n->ifindex) {
		route = encrypt_route_via(skb, p, n->daddr, &tunnel);
		if (route == ENCRYPT_VIA_TUNNEL && tunnel)
			return (int)bpf_redirect(tunnel, 0);
		if (route == ENCRYPT_IN_CLEAR && CFG_ENCRYPTION_STRICT)
			return np_drop(skb, DROP_UNENCRYPTED);
	}
	return np_forward(n->ifindex);
}

/* The key of a reply as it will arrive: backend -> (translated) source. */
static __always_inline void np_reply_key(struct porin_ct_key *key, const struct pkt_info *p,
					 const struct porin_np_nat *fwd)
{
	__builtin_memset(key, 0, sizeof(*key));
	key->family = PORIN_FAMILY_IPV4;
	key->l4_proto = p->l4_proto;
	__builtin_memcpy(key->saddr, &fwd->daddr, 4);
	__builtin_memcpy(key->daddr, &fwd->saddr, 4);
	key->sport = fwd->dport;
	key->dport = fwd->sport;
}

static __always_inline int np_is_local(__u32 addr)
{
	struct porin_endpoint_key key = { .family = PORIN_FAMILY_IPV4 };

	__builtin_memcpy(key.addr, &addr, 4);
	return bpf_map_lookup_elem(&porin_endpoints, &key) != 0;
}

/* The NodePort frontend a packet is for, or NULL. */
static __always_inline struct porin_lb_svc_value *np_frontend(const struct pkt_info *p)
{
	struct porin_lb_svc_key key = { .port = p->dport, .proto = p->l4_proto };
	struct porin_lb_svc_value *svc;

	__builtin_memcpy(&key.vip, p->daddr, 4);
	if (!key.vip || !CFG_NODE_IPV4)
		return 0;
	svc = bpf_map_lookup_elem(&porin_lb_svc, &key);
	if (svc)
		return svc;
	if (key.vip != CFG_NODE_IPV4)
		return 0;
	key.vip = 0;
	return bpf_map_lookup_elem(&porin_lb_svc, &key);
}

/*
 * Records both directions of a new connection. For SNAT, finds a source port no
 * other connection to the same backend uses. Returns 0 or DROP_CT_MAP_INSERT.
 */
static __always_inline int np_record(struct __sk_buff *skb, const struct pkt_info *p,
				     struct porin_np_nat *fwd, __u32 service_id)
{
	struct porin_np_nat rev = {
		.id = service_id,
		.ifindex = skb->ifindex,
	};
	struct porin_ct_key fkey, rkey;
	int i;

	__builtin_memcpy(&rev.saddr, p->daddr, 4);
	__builtin_memcpy(&rev.daddr, p->saddr, 4);
	rev.sport = p->dport;
	rev.dport = p->sport;

#pragma unroll
	for (i = 0; i < NP_SNAT_TRIES; i++) {
		if (i > 0) {
			/* Without SNAT the tuple is the client's own: nothing to choose. */
			if (!fwd->ifindex)
				return DROP_CT_MAP_INSERT;
			fwd->sport = NP_PORT_MIN + bpf_get_prandom_u32() % NP_PORT_SPAN;
		}
		np_reply_key(&rkey, p, fwd);
		if (bpf_map_update_elem(&porin_np_rnat, &rkey, &rev, BPF_NOEXIST) == 0)
			break;
		{
			/* Taken: by this very connection (its forward entry expired)? Reuse. */
			struct porin_np_nat *old = bpf_map_lookup_elem(&porin_np_rnat, &rkey);

			if (old && old->daddr == rev.daddr && old->dport == rev.dport &&
			    old->saddr == rev.saddr && old->sport == rev.sport)
				break;
		}
		if (i == NP_SNAT_TRIES - 1)
			return DROP_CT_MAP_INSERT;
	}
	ct_key_from(&fkey, p, 0);
	if (bpf_map_update_elem(&porin_np_nat, &fkey, fwd, BPF_ANY) < 0)
		return DROP_CT_MAP_INSERT;
	return 0;
}

/* Picks a backend for a new connection and fills the forward translation. */
static __always_inline int np_select(struct __sk_buff *skb, const struct pkt_info *p,
				     const struct porin_lb_svc_value *svc, struct porin_np_nat *fwd)
{
	struct porin_lb_backend *be;
	__u32 backend_id;

	{
		__u32 client;

		__builtin_memcpy(&client, p->saddr, 4);
		be = lb_pick_backend(svc, client, 0, lb_tuple_hash(p), &backend_id);
	}
	if (!be)
		return DROP_NO_SERVICE;

	fwd->id = backend_id;
	fwd->daddr = be->addr;
	fwd->dport = be->port;
	fwd->sport = p->sport;
	if (np_is_local(be->addr)) {
		__builtin_memcpy(&fwd->saddr, p->saddr, 4);
		fwd->ifindex = 0;
	} else {
		/* SNAT to this node's address, so the reply comes back here (the address the
		 * client targeted may be an external or LoadBalancer IP other nodes do not
		 * route to us); the reply gets the targeted address back as its source. */
		if (CFG_NODE_IPV4)
			fwd->saddr = CFG_NODE_IPV4;
		else
			__builtin_memcpy(&fwd->saddr, p->daddr, 4);
		fwd->ifindex = skb->ifindex;
	}
	return np_record(skb, p, fwd, svc->service_id);
}

/* The forward translation of a known connection whose backend still exists unchanged. */
static __always_inline int np_known(const struct pkt_info *p, struct porin_np_nat *fwd)
{
	struct porin_np_nat *n;
	struct porin_lb_backend *be;
	struct porin_ct_key key;
	__u32 id;

	ct_key_from(&key, p, 0);
	n = bpf_map_lookup_elem(&porin_np_nat, &key);
	if (!n)
		return 0;
	id = n->id;
	be = bpf_map_lookup_elem(&porin_lb_backends, &id);
	if (!be || be->addr != n->daddr || be->port != n->dport)
		return 0;
	*fwd = *n;
	return 1;
}

/* The reverse translation of a reply to a NodePort connection (keyed by the reply as it
 * arrives) into `n`; 0 when the packet is not one. */
static __always_inline int np_reply_of(const struct pkt_info *p, struct porin_np_nat *n)
{
	struct porin_np_nat *rev;
	struct porin_ct_key key;

	if (!lb_is_candidate(p))
		return 0;
	ct_key_from(&key, p, 0);
	rev = bpf_map_lookup_elem(&porin_np_rnat, &key);
	if (!rev)
		return 0;
	*n = *rev;
	return 1;
}

/*
 * The TCP header of a RST answering the segment `in` (RFC 9293 3.10.7.1: a segment without
 * ACK gets <SEQ=0><ACK=SEG.SEQ+SEG.LEN><CTL=RST,ACK>, one with ACK gets <SEQ=SEG.ACK>
 * <CTL=RST>), from the frontend port `p` targeted to the client's; `seg_len` is SEG.LEN
 * (payload, SYN and FIN). The checksum is left to the caller (IPv4 or IPv6 pseudo-header).
 */
static __always_inline void np_rst_tcp(struct tcphdr *out, const struct tcphdr *in, __u32 seg_len,
				       const struct pkt_info *p)
{
	out->source = bpf_htons(p->dport);
	out->dest = bpf_htons(p->sport);
	out->doff = sizeof(*out) / 4;
	out->rst = 1;
	if (in->ack) {
		out->seq = in->ack_seq;
	} else {
		out->ack = 1;
		/* bpf_htonl is its own inverse (a byte swap or nothing). */
		out->ack_seq = bpf_htonl(bpf_htonl(in->seq) + seg_len);
	}
}

/* A TCP RST answering the offending segment, from the frontend it targeted. */
struct np_rst {
	struct iphdr ip;
	struct tcphdr tcp;
};

/*
 * A TCP frontend without backends refuses with a RST (np_rst_tcp), sent back out of the
 * device to the client (lb_send_back). Not an ICMP error as for ClusterIPs: the client's
 * kernel may still hold its socket when the answer arrives (the whole path can run in its
 * connect()), and TCP only defers ICMP errors (a soft error, retried after a second) where
 * it backlogs a RST. A RST is never answered. Returns a TC verdict; the drop was already
 * counted.
 */
static __always_inline int np_reset(struct __sk_buff *skb, const struct pkt_info *p)
{
	struct np_rst r = {};
	struct iphdr in_ip;
	struct tcphdr in;
	struct ethhdr eth;
	__be32 frontend, client, pseudo[3];
	__u32 seg_len, tot_len;
	__s64 sum;

	if (p->l4_off != LB_ETH_HLEN + sizeof(struct iphdr))
		return TC_ACT_SHOT;
	if (bpf_skb_load_bytes(skb, 0, &eth, sizeof(eth)) < 0 ||
	    bpf_skb_load_bytes(skb, LB_ETH_HLEN, &in_ip, sizeof(in_ip)) < 0 ||
	    bpf_skb_load_bytes(skb, p->l4_off, &in, sizeof(in)) < 0)
		return TC_ACT_SHOT;
	tot_len = bpf_ntohs(in_ip.tot_len);
	if (in.rst || in_ip.ihl != 5 || tot_len < sizeof(in_ip) + in.doff * 4)
		return TC_ACT_SHOT;
	seg_len = tot_len - sizeof(in_ip) - in.doff * 4 + in.syn + in.fin;
	lb_swap_macs(&eth);

	__builtin_memcpy(&frontend, p->daddr, 4);
	__builtin_memcpy(&client, p->saddr, 4);
	lb_answer_ip(&r.ip, sizeof(r), IPPROTO_TCP, frontend, client);
	np_rst_tcp(&r.tcp, &in, seg_len, p);
	/* The pseudo-header (RFC 9293 3.1): source, destination, zero, protocol, TCP length. */
	pseudo[0] = r.ip.saddr;
	pseudo[1] = r.ip.daddr;
	pseudo[2] = bpf_htonl((IPPROTO_TCP << 16) | sizeof(r.tcp));
	sum = bpf_csum_diff(0, 0, (__be32 *)&r.tcp, sizeof(r.tcp), 0);
	sum = bpf_csum_diff(0, 0, pseudo, sizeof(pseudo), (__u32)sum);
	r.tcp.check = lb_csum_fold(sum);
	return lb_send_back(skb, &eth, &r, sizeof(r));
}

/* tcx ingress of an external device. Returns a TC verdict. */
static __always_inline int np_from_netdev(struct __sk_buff *skb, struct pkt_info *p)
{
	struct porin_lb_svc_value *svc;
	struct porin_np_nat n = {};
	int ret;

	if (!lb_is_candidate(p))
		return TC_ACT_OK;

	/* A reply from a remote backend to a connection we SNATed. */
	if (np_reply_of(p, &n)) {
		ret = np_rewrite(skb, p, &n);
		if (ret < 0)
			return np_drop(skb, ret);
		return np_forward(n.ifindex);
	}

	svc = np_frontend(p);
	if (!svc)
		return TC_ACT_OK;
	if (!np_known(p, &n)) {
		ret = np_select(skb, p, svc, &n);
		if (ret == DROP_NO_SERVICE) {
			np_drop(skb, ret);
			return p->l4_proto == IPPROTO_TCP ? np_reset(skb, p) : lb_reject(skb);
		}
		if (ret < 0)
			return np_drop(skb, ret);
	}
	ret = np_rewrite(skb, p, &n);
	if (ret < 0)
		return np_drop(skb, ret);
	return np_forward_remote(skb, p, &n);
}

/*
 * tcx ingress of the WireGuard device (host.c, porin_from_tunnel), with encryption on: a
 * remote backend's reply to a connection this node SNATed came back through the tunnel
 * (the backend's node sends replies to peers' node addresses into it,
 * encrypt_node_reply). The device is an L3 device: the packet starts at its IP header
 * (`p` parsed at offset 0). A reply gets an Ethernet header (the rewrite offsets and
 * bpf_redirect_neigh expect one, as on the external device), is reverse-translated and
 * redirected to the client. Anything else passes untouched.
 */
static __always_inline int np_from_tunnel(struct __sk_buff *skb, struct pkt_info *p)
{
	__be16 proto = bpf_htons(ETH_P_IP);
	struct porin_np_nat n;
	int ret;

	if (!np_reply_of(p, &n))
		return TC_ACT_OK;
	if (bpf_skb_change_head(skb, LB_ETH_HLEN, 0) < 0 ||
	    bpf_skb_store_bytes(skb, LB_ETH_HLEN - 2, &proto, sizeof(proto), 0) < 0)
		return np_drop(skb, DROP_INVALID);
	p->l4_off += LB_ETH_HLEN;
	ret = np_rewrite(skb, p, &n);
	if (ret < 0)
		return np_drop(skb, ret);
	return np_forward(n.ifindex);
}

/*
 * Pod program, from-pod, last: a reply of a local backend to a NodePort
 * connection gets the frontend back as its source and leaves by the external
 * device it came in on (the stack would refuse a node address as the source of a
 * packet from a pod). Returns -1 when the packet is not one, else a TC verdict.
 */
static __always_inline int np_rev_from_pod(struct __sk_buff *skb, struct pkt_info *p)
{
	struct porin_np_nat n;
	int ret;

	if (!np_reply_of(p, &n))
		return -1;
	ret = np_rewrite(skb, p, &n);
	if (ret < 0)
		return np_drop(skb, ret);
	return np_forward(n.ifindex);
}
