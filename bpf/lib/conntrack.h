/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Connection tracking: an LRU hash keyed by the 5-tuple of the packet that
 * opened the connection. A packet first looks up its own tuple (original
 * direction), then the reversed tuple (reply direction), and creates an entry
 * when neither exists.
 */
#pragma once

#include "bpf_api.h"
#include "common.h"
#include "drop_reasons.h"
#include "maps.h"
#include "parse.h"

#define CT_DIR_ORIGINAL 0
#define CT_DIR_REPLY 1

/* The flags whose first appearance in a direction is worth an event. */
#define CT_NOTIFY_FLAGS (TCP_FLAG_SYN | TCP_FLAG_FIN | TCP_FLAG_RST)

struct ct_result {
	__u8 created;   /* the entry was created by this packet */
	__u8 is_reply;  /* the packet matched the reversed tuple */
	__u8 new_flags; /* CT_NOTIFY_FLAGS seen for the first time in this direction */
};

static __always_inline void ct_key_from(struct porin_ct_key *key, const struct pkt_info *p,
					int reverse)
{
	__builtin_memset(key, 0, sizeof(*key));
	key->family = p->family;
	key->l4_proto = p->l4_proto;
	if (reverse) {
		__builtin_memcpy(key->saddr, p->daddr, 16);
		__builtin_memcpy(key->daddr, p->saddr, 16);
		key->sport = p->dport;
		key->dport = p->sport;
	} else {
		__builtin_memcpy(key->saddr, p->saddr, 16);
		__builtin_memcpy(key->daddr, p->daddr, 16);
		key->sport = p->sport;
		key->dport = p->dport;
	}
}

static __always_inline void ct_account(struct porin_ct_entry *e, int dir, __u32 len, __u64 now,
				       const struct pkt_info *p, struct ct_result *res)
{
	__u32 notify = p->tcp_flags & CT_NOTIFY_FLAGS;

	/* dir is 0 or 1: the mask keeps the verifier sure of the index. */
	dir &= 1;
	__sync_fetch_and_add(&e->packets[dir], 1);
	__sync_fetch_and_add(&e->bytes[dir], len);
	e->last_seen_ns = now;
	if (notify) {
		/* Atomic fetch-or: exactly one CPU sees a given flag as new. */
		__u32 old = __sync_fetch_and_or(&e->tcp_flags_seen[dir], notify);

		res->new_flags = notify & ~old;
	}
}

/*
 * Scope: 0, or (with policy) the local endpoint id, stored in the key's padding.
 * With policy, each endpoint tracks its own connections: a connection between two
 * pods of one node gets one entry per side, so the destination's ingress policy
 * decides it too (as Cilium's per-direction entries do).
 */
static __always_inline void ct_key_scoped(struct porin_ct_key *key, const struct pkt_info *p,
					  int reverse, __u16 scope)
{
	ct_key_from(key, p, reverse);
	__builtin_memcpy(key->pad, &scope, sizeof(scope));
}

/* Forgets the entry a new connection created (a policy refused it). */
static __always_inline void ct_delete(const struct pkt_info *p, __u16 scope)
{
	struct porin_ct_key key;

	ct_key_scoped(&key, p, 0, scope);
	bpf_map_delete_elem(&porin_ct, &key);
}

/* Returns 0 or a negative DROP_* reason. */
static __always_inline int ct_process(const struct pkt_info *p, __u32 len, struct ct_result *res,
				      __u16 scope)
{
	struct porin_ct_key key;
	struct porin_ct_entry *e;
	__u64 now = bpf_ktime_get_ns();

	ct_key_scoped(&key, p, 0, scope);
	e = bpf_map_lookup_elem(&porin_ct, &key);
	if (e) {
		ct_account(e, CT_DIR_ORIGINAL, len, now, p, res);
		return 0;
	}

	ct_key_scoped(&key, p, 1, scope);
	e = bpf_map_lookup_elem(&porin_ct, &key);
	if (e) {
		res->is_reply = 1;
		ct_account(e, CT_DIR_REPLY, len, now, p, res);
		return 0;
	}

	{
		struct porin_ct_entry entry = {
			.created_ns = now,
			.last_seen_ns = now,
			.packets = { 1, 0 },
			.bytes = { len, 0 },
			.tcp_flags_seen = { p->tcp_flags & CT_NOTIFY_FLAGS, 0 },
		};
		long err;

		ct_key_scoped(&key, p, 0, scope);
		err = bpf_map_update_elem(&porin_ct, &key, &entry, BPF_NOEXIST);
		if (err == -17 /* EEXIST: another CPU created it just now */) {
			e = bpf_map_lookup_elem(&porin_ct, &key);
			if (e)
				ct_account(e, CT_DIR_ORIGINAL, len, now, p, res);
			return 0;
		}
		if (err < 0)
			return DROP_CT_MAP_INSERT;
		res->created = 1;
	}
	return 0;
}
