/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Pod veth programs, attached to the host-side veth of every pod:
 *   porin_from_pod: tcx ingress (packets leaving the pod)  -> PORIN_DIR_EGRESS
 *   porin_to_pod:   tcx egress  (packets entering the pod) -> PORIN_DIR_INGRESS
 * The logic lives in lib/ (one header per concern); this file only wires it to the attach points.
 */
#include "lib/bpf_api.h"
#include "lib/common.h"
#include "lib/config.h"
#include "lib/maps.h"
#include "lib/parse.h"
#include "lib/conntrack.h"
#include "lib/metrics.h"
#include "lib/events.h"
#include "lib/drop.h"
#include "lib/lb.h"
#include "lib/lb6.h"
#include "lib/policy.h"
#include "lib/policy_verdict.h"
#include "lib/proxy.h"
#include "lib/nodeport.h"
#include "lib/nodeport6.h"
#include "lib/encrypt.h"

static __always_inline int handle_pod_packet(struct __sk_buff *skb, __u8 direction)
{
	struct pkt_info p = {};
	struct ct_result ct = {};
	struct lb_xlate lb = {};
	struct lb6_xlate lb6 = {};
	struct pkt_info to_backend;
	const struct pkt_info *decided = &p;
	struct policy_tuple pol = {};
	struct policy_match pm = {};
	__u16 ct_scope = 0;
	__u16 proxy_port = 0;
	struct event_ctx ev = {
		.verdict = PORIN_VERDICT_FORWARDED,
		.direction = direction,
	};
	int ret;

	ret = parse_packet(skb, &p);
	if (ret == PARSE_NOT_IP || ret == PARSE_LINK_LOCAL)
		return TC_ACT_OK; /* ARP, IPv6 ND/MLD and friends pass untouched and uncounted */
	if (ret < 0)
		return send_drop(skb, &p, ret, direction);
	/* Ingress L7 redirect, step 2: a packet porin_to_pod handed back for the node's proxy. */
	if (CFG_ENABLE_POLICY && direction == PORIN_DIR_EGRESS && proxy_to_proxy_marked(skb)) {
		ret = proxy_assign_ingress(skb, &p);
		return ret < 0 ? send_drop(skb, &p, ret, PORIN_DIR_INGRESS) : ret;
	}

	/* Load balancing: pick the backend of a packet to a service before conntrack, so a
	 * service without backends is refused without leaving a connection behind; restore
	 * the service address of replies before conntrack, so both directions match. */
	if (CFG_ENABLE_LB && direction == PORIN_DIR_EGRESS) {
		ret = lb_select(&p, &lb);
		if (ret == DROP_NO_SERVICE) {
			notify_drop(skb, &p, ret, direction);
			return lb_reject(skb);
		}
		if (ret < 0)
			return send_drop(skb, &p, ret, direction);
		ret = lb6_select(&p, &lb6);
		if (ret == DROP_NO_SERVICE) {
			notify_drop(skb, &p, ret, direction);
			return lb6_reject(skb, &p);
		}
		if (ret < 0)
			return send_drop(skb, &p, ret, direction);
		/* Policy and encryption decide an IPv6 service connection against its backend. */
		if (lb6.active) {
			to_backend = p;
			__builtin_memcpy(to_backend.daddr, lb6.backend, 16);
			to_backend.dport = lb6.backend_port;
			decided = &to_backend;
		}
	}
	/* A reply of the node's proxy: its source becomes the original destination again,
	 * before load balancing's reverse translation (which may turn it into the VIP). */
	if (CFG_ENABLE_POLICY && direction == PORIN_DIR_INGRESS) {
		ret = proxy_rev_nat(skb, &p);
		if (ret < 0)
			return send_drop(skb, &p, ret, direction);
	}
	if (CFG_ENABLE_LB && direction == PORIN_DIR_INGRESS) {
		ret = lb_rev_nat(skb, &p);
		if (ret < 0)
			return send_drop(skb, &p, ret, direction);
		ret = lb6_rev_nat(skb, &p);
		if (ret < 0)
			return send_drop(skb, &p, ret, direction);
	}

	/* Encryption strict mode: a packet to another node's pods that would not leave through
	 * the WireGuard device is dropped, never sent in clear. */
	if (CFG_ENCRYPTION_STRICT && direction == PORIN_DIR_EGRESS) {
		ret = encrypt_strict_check(skb, decided, lb.active ? lb.backend_addr : 0);
		if (ret < 0)
			return send_drop(skb, &p, ret, direction);
	}

	/* Policy: decided for the local endpoint against the peer's identity; after load
	 * balancing, so egress to a service is decided against the chosen backend. */
	if (CFG_ENABLE_POLICY &&
	    policy_tuple_of(decided, direction, lb.active ? lb.backend_port : 0, &pol))
		ct_scope = (__u16)pol.endpoint_id;

	ret = ct_process(&p, skb->len, &ct, ct_scope);
	if (ret < 0)
		return send_drop(skb, &p, ret, direction);

	/* Only the packet that opens a connection is decided: replies and established
	 * connections pass. A refused connection leaves no conntrack entry behind.
	 * The node's L7 proxy's own connection to a pod was judged by the proxy (lib/proxy.h). */
	if (CFG_ENABLE_POLICY && ct.created && pol.endpoint_id &&
	    !(direction == PORIN_DIR_INGRESS && proxy_from_ingress_proxy(skb))) {
		__u8 verdict = PORIN_VERDICT_FORWARDED;
		int reason = 0;

		policy_tuple_peer(decided, lb.active ? lb.backend_addr : 0, &pol);
		ret = policy_decide(&pol, &proxy_port, &pm);
		if (ret < 0 && CFG_POLICY_AUDIT) {
			verdict = PORIN_VERDICT_AUDIT;
			reason = ret;
			ret = 0;
		}
		if (ret >= 0 && direction == PORIN_DIR_EGRESS)
			ret = proxy_record(&p, &lb, &pol, proxy_port);
		else if (ret >= 0)
			ret = proxy_record_ingress(&p, &pol, proxy_port);
		if (ret < 0) {
			ct_delete(&p, ct_scope);
			return policy_send_drop(skb, &p, ret, direction, &pm);
		}
		if (pm.policy_id || verdict == PORIN_VERDICT_AUDIT)
			policy_verdict_notify(skb, &p, direction, verdict, reason, &pm);
	}

	metrics_update(PORIN_REASON_FORWARDED, direction, skb->len);
	ev.is_reply = ct.is_reply;
	if (CFG_ENABLE_WIREGUARD && (ct.created || ct.new_flags))
		ev.flags = encrypt_flow_flags(skb, &p, direction, lb.active ? lb.backend_addr : 0);
	if (ct.created) {
		ev.type = PORIN_EVENT_NEW_CONN;
		emit_event(skb, &p, &ev);
	} else if (ct.new_flags) {
		ev.type = PORIN_EVENT_TCP_FLAGS;
		emit_event(skb, &p, &ev);
	}
	/* Redirected to the node's proxy (instead of the backend, if any): DNAT to the proxy. */
	if (CFG_ENABLE_POLICY && direction == PORIN_DIR_EGRESS) {
		ret = proxy_redirect(skb, &p, &lb);
		if (ret < 0)
			return send_drop(skb, &p, ret, direction);
		if (ret > 0)
			return TC_ACT_OK;
	}
	/* Ingress L7 redirect, step 1: back to the node, for the proxy's socket. */
	if (CFG_ENABLE_POLICY && direction == PORIN_DIR_INGRESS) {
		ret = proxy_redirect_ingress(skb, &p);
		if (ret < 0)
			return send_drop(skb, &p, ret, direction);
		if (ret > 0)
			return ret;
	}
	/* DNAT last: conntrack and events above saw what the client sent (client -> VIP). */
	if (lb.active) {
		ret = lb_dnat(skb, &p, &lb);
		if (ret < 0)
			return send_drop(skb, &p, ret, direction);
	}
	if (lb6.active) {
		ret = lb6_dnat(skb, &p, &lb6);
		if (ret < 0)
			return send_drop(skb, &p, ret, direction);
	}
	/* A local backend's reply to a NodePort client: events above saw backend -> client. */
	if (CFG_ENABLE_NODEPORT && direction == PORIN_DIR_EGRESS) {
		ret = np_rev_from_pod(skb, &p);
		if (ret >= 0)
			return ret;
		ret = np6_rev_from_pod(skb, &p);
		if (ret >= 0)
			return ret;
	}
	/* A reply to another node's NodePort SNAT goes back through the tunnel. */
	if (CFG_ENABLE_WIREGUARD && direction == PORIN_DIR_EGRESS) {
		ret = encrypt_node_reply(&p, ct.is_reply);
		if (ret >= 0)
			return ret;
	}
	return TC_ACT_OK;
}

SEC("classifier")
int porin_from_pod(struct __sk_buff *skb)
{
	return handle_pod_packet(skb, PORIN_DIR_EGRESS);
}

SEC("classifier")
int porin_to_pod(struct __sk_buff *skb)
{
	return handle_pod_packet(skb, PORIN_DIR_INGRESS);
}

char _license[] SEC("license") = "Dual BSD/GPL";
