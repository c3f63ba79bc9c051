/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Flow events of policy decisions (Cilium's policy verdict notifications):
 *
 * - a new connection allowed by a policy entry emits a PORIN_EVENT_POLICY_VERDICT event
 *   (verdict FORWARDED) naming that entry's policy_id and match type, before the
 *   connection's trace event;
 * - a refused one is dropped through policy_send_drop: the drop event carries the deny
 *   entry's policy_id (181), or none for default deny (133);
 * - in policy audit mode (CFG_POLICY_AUDIT) a refused connection is forwarded instead and
 *   its policy verdict event says AUDIT, with the reason it would have been dropped for.
 *
 * Established connections and replies are never decided, so they emit none of these.
 */
#pragma once

#include "bpf_api.h"
#include "common.h"
#include "config.h"
#include "events.h"
#include "metrics.h"
#include "parse.h"
#include "policy.h"

/* The policy verdict event of a new connection: `verdict` is PORIN_VERDICT_FORWARDED or
 * PORIN_VERDICT_AUDIT; `reason` the negative DROP_* an audited connection escaped, else 0. */
static __always_inline void policy_verdict_notify(struct __sk_buff *skb, const struct pkt_info *p,
						  __u8 direction, __u8 verdict, int reason,
						  const struct policy_match *m)
{
	struct event_ctx ctx = {
		.type = PORIN_EVENT_POLICY_VERDICT,
		.verdict = verdict,
		.drop_reason = (__u8)(-reason),
		.direction = direction,
		.policy_match = m->match_type,
		.policy_id = m->policy_id,
	};

	emit_event(skb, p, &ctx);
}

/* Drops a refused new connection (reason: a negative DROP_* value): counted like every
 * drop, and its event names the deciding entry. */
static __always_inline int policy_send_drop(struct __sk_buff *skb, const struct pkt_info *p,
					    int reason, __u8 direction,
					    const struct policy_match *m)
{
	struct event_ctx ctx = {
		.type = PORIN_EVENT_DROP,
		.verdict = PORIN_VERDICT_DROPPED,
		.drop_reason = (__u8)(-reason),
		.direction = direction,
		.policy_match = m->match_type,
		.policy_id = m->policy_id,
	};

	metrics_update(ctx.drop_reason, direction, skb->len);
	emit_event(skb, p, &ctx);
	return TC_ACT_SHOT;
}
