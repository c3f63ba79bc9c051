/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* The single exit for dropped packets: count, notify, shoot. */
#pragma once

#include "bpf_api.h"
#include "common.h"
#include "drop_reasons.h"
#include "events.h"
#include "metrics.h"
#include "parse.h"

/* Counts and reports a drop; reason is a negative DROP_* value. */
static __always_inline void notify_drop(struct __sk_buff *skb, const struct pkt_info *p, int reason,
					__u8 direction)
{
	struct event_ctx ctx = {
		.type = PORIN_EVENT_DROP,
		.verdict = PORIN_VERDICT_DROPPED,
		.drop_reason = (__u8)(-reason),
		.direction = direction,
	};

	metrics_update(ctx.drop_reason, direction, skb->len);
	emit_event(skb, p, &ctx);
}

/* reason is a negative DROP_* value. */
static __always_inline int send_drop(struct __sk_buff *skb, const struct pkt_info *p, int reason,
				     __u8 direction)
{
	notify_drop(skb, p, reason, direction);
	return TC_ACT_SHOT;
}
