/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Per-CPU packet/byte counters keyed by {reason, direction}. */
#pragma once

#include "bpf_api.h"
#include "common.h"
#include "maps.h"

static __always_inline void metrics_update(__u8 reason, __u8 direction, __u32 bytes)
{
	struct porin_metrics_key key = { .reason = reason, .direction = direction };
	struct porin_metrics_value *val;

	val = bpf_map_lookup_elem(&porin_metrics, &key);
	if (unlikely(!val)) {
		struct porin_metrics_value zero = {};

		/* EEXIST here only means another CPU created it first. */
		bpf_map_update_elem(&porin_metrics, &key, &zero, BPF_NOEXIST);
		val = bpf_map_lookup_elem(&porin_metrics, &key);
		if (!val)
			return;
	}
	/* Per-CPU value: no atomics needed. */
	val->packets += 1;
	val->bytes += bytes;
}
