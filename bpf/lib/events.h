/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Flow events, aggregated like Cilium's monitor aggregation: callers emit
 * one event per new connection, per first SYN/FIN/RST in a direction of a
 * connection, and per drop; never one per packet. A full ring buffer is
 * counted under PORIN_REASON_EVENT_LOST, never silent.
 */
#pragma once

#include "bpf_api.h"
#include "common.h"
#include "config.h"
#include "identity.h"
#include "maps.h"
#include "metrics.h"
#include "parse.h"

struct event_ctx {
	__u8 type;
	__u8 verdict;
	__u8 drop_reason;
	__u8 direction;
	__u8 is_reply;
	__u8 flags; /* PORIN_EVENT_F_* */
	__u8 policy_match; /* PORIN_POLICY_MATCH_* */
	__u32 policy_id;   /* the deciding policy entry's policy_id, 0: none */
};

/* Submit flags (linux/bpf.h): no notification, or one whatever the reader's position. */
#define PORIN_RB_NO_WAKEUP 1
#define PORIN_RB_FORCE_WAKEUP 2
#define PORIN_RB_AVAIL_DATA 0
/* Bytes waiting in the ring above which a record wakes the reader. */
#define PORIN_EVENTS_WAKEUP_BYTES (PORIN_EVENTS_BYTES / 4)

/*
 * Records wake the agent's reader only once a quarter of the ring waits; the reader
 * also drains the ring on a short timer (core/src/datapath/events.rs). A wakeup per
 * record (the kernel's default when the reader has caught up) costs the agent a
 * context switch per packet event, the largest share of a connection's cost.
 */
static __always_inline __u64 events_wakeup_flag(void)
{
	return bpf_ringbuf_query(&porin_events, PORIN_RB_AVAIL_DATA) >= PORIN_EVENTS_WAKEUP_BYTES
		       ? PORIN_RB_FORCE_WAKEUP
		       : PORIN_RB_NO_WAKEUP;
}

static __always_inline void emit_event(struct __sk_buff *skb, const struct pkt_info *p,
				       const struct event_ctx *ctx)
{
	struct porin_flow_event *ev;

	if (!CFG_EMIT_EVENTS)
		return;

	ev = bpf_ringbuf_reserve(&porin_events, sizeof(*ev), 0);
	if (!ev) {
		metrics_update(PORIN_REASON_EVENT_LOST, ctx->direction, skb->len);
		return;
	}
	ev->ktime_ns = bpf_ktime_get_ns();
	ev->type = ctx->type;
	ev->verdict = ctx->verdict;
	ev->drop_reason = ctx->drop_reason;
	ev->direction = ctx->direction;
	ev->family = p->family;
	ev->l4_proto = p->l4_proto;
	ev->tcp_flags = p->tcp_flags;
	ev->icmp_type = p->icmp_type;
	ev->icmp_code = p->icmp_code;
	ev->is_reply = ctx->is_reply;
	ev->flags = ctx->flags;
	ev->pad = 0;
	ev->policy_id = ctx->policy_id;
	ev->policy_match = ctx->policy_match;
	ev->pad2[0] = 0;
	ev->pad2[1] = 0;
	ev->pad2[2] = 0;
	ev->sport = p->sport;
	ev->dport = p->dport;
	ev->ifindex = skb->ifindex;
	ev->pkt_len = skb->len;
	ev->node_id = CFG_NODE_ID;
	__builtin_memcpy(ev->saddr, p->saddr, 16);
	__builtin_memcpy(ev->daddr, p->daddr, 16);
	if (p->family) {
		ev->src_identity = ipcache_identity(p->family, p->saddr);
		ev->dst_identity = ipcache_identity(p->family, p->daddr);
		/* The local endpoint is the source leaving the pod, the destination entering it. */
		ev->endpoint_id = endpoint_id(p->family, ctx->direction == PORIN_DIR_EGRESS
								 ? p->saddr
								 : p->daddr);
	} else {
		ev->src_identity = 0;
		ev->dst_identity = 0;
		ev->endpoint_id = 0;
	}
	bpf_ringbuf_submit(ev, events_wakeup_flag());
}
