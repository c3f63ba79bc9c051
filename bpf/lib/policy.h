/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * L3/L4 policy enforcement (CFG_ENABLE_POLICY), Cilium semantics:
 *
 * - Only new connections are decided (the packet that created the conntrack
 *   entry); established connections and their replies pass.
 * - from-pod decides the egress of the source endpoint, to-pod the ingress of
 *   the destination endpoint. The peer identity comes from the ipcache.
 * - Lookup: the 8 combinations of {peer identity | any} x {protocol | any} x
 *   {port | any} in porin_policy. Any DENY entry wins (POLICY_DENY, 181), at any
 *   specificity; otherwise any ALLOW entry passes; otherwise the endpoint's
 *   default-deny flag (porin_policy_ep) decides (POLICY_DENIED, 133). The deciding
 *   entry's policy_id and match type travel in the flow events (lib/policy_verdict.h).
 * - Addresses that are not local endpoints (no porin_endpoints entry) are not policed.
 * - An ALLOW entry may carry a proxy port (DNS or HTTP rules): the connection is allowed
 *   and steered to the node's proxy (lib/proxy.h). The most specific such entry wins
 *   (the lookup order below goes from the most to the least specific key).
 * - A port with HTTP rules for some peers carries a marker entry (identity
 *   PORIN_POLICY_L7_PORT_IDENTITY): a connection allowed on that port by an entry without a
 *   proxy port goes to the HTTP proxy as well (Cilium redirects the whole port; those peers
 *   get allow-all at L7). The marker never allows by itself.
 */
#pragma once

#include "bpf_api.h"
#include "common.h"
#include "drop_reasons.h"
#include "identity.h"
#include "maps.h"
#include "parse.h"

#ifndef IPPROTO_SCTP
#define IPPROTO_SCTP 132
#endif

/* What the policy decides about: local endpoint, peer address and destination port. */
struct policy_tuple {
	__u32 endpoint_id;
	__u32 peer_identity;
	__u16 dport;
	__u8 proto;
	__u8 direction;
};

static __always_inline int policy_has_ports(__u8 proto)
{
	return proto == IPPROTO_TCP || proto == IPPROTO_UDP || proto == IPPROTO_SCTP;
}

/* The local endpoint of a packet in `direction`: the source leaving a pod, the destination
 * entering it. 0 when the address is not a local endpoint. */
static __always_inline __u32 policy_local_endpoint(const struct pkt_info *p, __u8 direction)
{
	return endpoint_id(p->family, direction == PORIN_DIR_EGRESS ? p->saddr : p->daddr);
}

/* Fills `t` for a packet, all but the peer's identity (policy_tuple_peer). `dport` overrides
 * the destination port of egress traffic to a service (the backend's, host order; 0: the
 * packet's own). Returns 0 when the packet has no local endpoint. */
static __always_inline int policy_tuple_of(const struct pkt_info *p, __u8 direction, __u16 dport,
					   struct policy_tuple *t)
{
	t->endpoint_id = policy_local_endpoint(p, direction);
	if (!t->endpoint_id)
		return 0;
	t->direction = direction;
	t->proto = p->l4_proto;
	t->dport = policy_has_ports(p->l4_proto) && p->has_l4 ? (dport ? dport : p->dport) : 0;
	return 1;
}

/* The peer's identity from the ipcache: the source of a packet entering a pod, the
 * destination of one leaving it, or `peer_v4` (network order, 0: none) for egress to a
 * service (the backend chosen by load balancing). An LPM lookup: only the packet that opens
 * a connection is decided, so established traffic never pays it. */
static __always_inline void policy_tuple_peer(const struct pkt_info *p, __u32 peer_v4,
					      struct policy_tuple *t)
{
	if (t->direction == PORIN_DIR_INGRESS) {
		t->peer_identity = ipcache_identity(p->family, p->saddr);
	} else if (peer_v4) {
		__u8 addr[16] = {};

		__builtin_memcpy(addr, &peer_v4, 4);
		t->peer_identity = ipcache_identity(p->family, addr);
	} else {
		t->peer_identity = ipcache_identity(p->family, p->daddr);
	}
}

/* The policy entry that decided a new connection (flow events name it). */
struct policy_match {
	__u32 policy_id;  /* porin_policy_value.policy_id, 0: no entry (default deny, no policy) */
	__u8 match_type;  /* PORIN_POLICY_MATCH_* */
};

/* Which parts of the key matched in lookup round `i` of policy_decide (bit 0: any identity,
 * bit 1: any protocol, bit 2: any port), as Cilium's policy match type. A constant once the
 * loop is unrolled. */
static __always_inline __u8 policy_match_type(int i)
{
	int l3 = !(i & 1);

	if (!(i & 4))
		return l3 ? PORIN_POLICY_MATCH_L3_L4 : PORIN_POLICY_MATCH_L4_ONLY;
	if (!(i & 2))
		return l3 ? PORIN_POLICY_MATCH_L3_PROTO : PORIN_POLICY_MATCH_PROTO_ONLY;
	return l3 ? PORIN_POLICY_MATCH_L3_ONLY : PORIN_POLICY_MATCH_ALL;
}

/* Returns 0 (allowed) or DROP_POLICY / DROP_POLICY_DENY; `*proxy_port` gets the proxy port
 * of the most specific ALLOW entry that has one (0: no redirection). `m` names the deciding
 * entry: the deny entry, else the allow entry whose proxy port is used, else the most
 * specific allow entry; nothing for default deny or when no entry matched. */
static __always_inline int policy_decide(const struct policy_tuple *t, __u16 *proxy_port,
					 struct policy_match *m)
{
	struct porin_policy_ep_key ekey = { .endpoint_id = t->endpoint_id,
					    .direction = t->direction };
	struct porin_policy_key key = { .endpoint_id = t->endpoint_id, .direction = t->direction };
	struct porin_policy_ep_value *ep;
	struct porin_policy_value *v;
	int allowed = 0;
	int i;

	*proxy_port = 0;
	m->policy_id = 0;
	m->match_type = PORIN_POLICY_MATCH_NONE;
#pragma unroll
	for (i = 0; i < 8; i++) {
		key.identity = (i & 1) ? 0 : t->peer_identity;
		key.proto = (i & 2) ? 0 : t->proto;
		key.dport = (i & 4) ? 0 : t->dport;
		v = bpf_map_lookup_elem(&porin_policy, &key);
		if (!v)
			continue;
		if (v->action == PORIN_POLICY_DENY) {
			m->policy_id = v->policy_id;
			m->match_type = policy_match_type(i);
			return DROP_POLICY_DENY;
		}
		if (!allowed || (!*proxy_port && v->proxy_port)) {
			m->policy_id = v->policy_id;
			m->match_type = policy_match_type(i);
		}
		if (!*proxy_port)
			*proxy_port = v->proxy_port;
		allowed = 1;
	}
	if (allowed && !*proxy_port && t->dport) {
		key.identity = PORIN_POLICY_L7_PORT_IDENTITY;
		key.dport = t->dport;
		key.proto = t->proto;
		v = bpf_map_lookup_elem(&porin_policy, &key);
		if (!v) {
			key.proto = 0;
			v = bpf_map_lookup_elem(&porin_policy, &key);
		}
		if (v && v->action == PORIN_POLICY_ALLOW)
			*proxy_port = v->proxy_port;
	}
	if (allowed)
		return 0;
	ep = bpf_map_lookup_elem(&porin_policy_ep, &ekey);
	if (ep && ep->default_deny)
		return DROP_POLICY;
	return 0;
}
