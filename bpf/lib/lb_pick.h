/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Backend selection for a new connection, shared by the per-packet LB (lb.h, lb6.h),
 * NodePort (nodeport.h) and the socket LB (lb_sock.h, lb_sock6.h): one family-generic
 * lb_pick_in over the family's affinity, slot and backend maps.
 *
 * A service with sessionAffinity: ClientIP (PORIN_LB_F_AFFINITY) first looks
 * in porin_lb_affin (IPv6: porin_lb_affin6) for the backend this client was last sent to; it keeps it
 * while the client opens connections within the timeout and the backend still
 * exists (the agent removes the entries of backends that leave an affinity
 * service). Otherwise a random slot is chosen (CFG_LB_MAGLEV: the slot of the
 * connection's hash in the service's Maglev table, porin_lb_maglev), and
 * remembered for affinity.
 * Each new connection refreshes the entry's time, as kube-proxy's `recent`
 * match does.
 */
#pragma once

#include "bpf_api.h"
#include "common.h"
#include "config.h"
#include "maps.h"

#define LB_NS_PER_SEC 1000000000ULL

/*
 * Murmur3 (32-bit) over whole words: the hash a Maglev table is indexed with. The
 * agent's tests mirror it (core/tests/lb_maglev_prog_test_run.rs); a change here
 * changes which backend every flow lands on.
 */
static __always_inline __u32 lb_hash_word(__u32 h, __u32 k)
{
	k *= 0xcc9e2d51;
	k = (k << 15) | (k >> 17);
	k *= 0x1b873593;
	h ^= k;
	h = (h << 13) | (h >> 19);
	return h * 5 + 0xe6546b64;
}

/*
 * An IPv6 address as four words (as in memory), for the IPv6 flow hashes: lb6_tuple_hash
 * (lb6.h: source, destination, ports, protocol, like lb_tuple_hash) and lb_sock6_hash
 * (lb_sock6.h: netns cookie, frontend). Mirrored in core/tests/common/lb_hash.rs.
 */
static __always_inline __u32 lb_hash_addr6(__u32 h, const __u8 *addr)
{
	__u32 w[4];

	__builtin_memcpy(w, addr, 16);
	h = lb_hash_word(h, w[0]);
	h = lb_hash_word(h, w[1]);
	h = lb_hash_word(h, w[2]);
	return lb_hash_word(h, w[3]);
}

static __always_inline __u32 lb_hash_final(__u32 h)
{
	h ^= h >> 16;
	h *= 0x85ebca6b;
	h ^= h >> 13;
	h *= 0xc2b2ae35;
	return h ^ (h >> 16);
}

/*
 * The backend id at the flow's slot of the service's Maglev table, or 0 when the
 * service has no table (yet): the caller then falls back to a random slot.
 */
static __always_inline __u32 lb_maglev_backend(__u32 service_id, __u32 hash)
{
	__u32 zero = 0, slot, m = CFG_LB_MAGLEV_M;
	__u32 *table;
	void *inner;

	inner = bpf_map_lookup_elem(&porin_lb_maglev, &service_id);
	if (!inner)
		return 0;
	table = bpf_map_lookup_elem(inner, &zero);
	if (!table || m == 0)
		return 0;
	slot = hash % m;
	/* Spelled out for the verifier, which does not bound a modulo: the table holds
	 * exactly m entries. The empty asm keeps clang from proving the check redundant. */
	asm volatile("" : "+r"(slot));
	if (slot >= m)
		return 0;
	return table[slot];
}

static __always_inline int lb_has_affinity(const struct porin_lb_svc_value *svc)
{
	return svc->flags & PORIN_LB_F_AFFINITY;
}

static __always_inline __u64 lb_affinity_timeout_ns(const struct porin_lb_svc_value *svc)
{
	return (__u64)(svc->flags >> PORIN_LB_AFFINITY_TIMEOUT_SHIFT) * LB_NS_PER_SEC;
}

/*
 * The backend for a new connection to `svc`, family-generic: `affin` is the affinity map
 * and `akey` this client's key in it (its service_id filled in), `slots` and `backends`
 * the family's slot and backend maps (porin_lb_slots/porin_lb_backends, or their IPv6
 * counterparts). Fills `*backend_id` and returns the backend (a value of `backends`), or
 * NULL when the service has none to give. `hash` identifies the connection for Maglev
 * (lb_tuple_hash, lb6_tuple_hash, or the socket LB's own). Always inlined: the map
 * arguments resolve to the maps themselves.
 */
static __always_inline void *lb_pick_in(const struct porin_lb_svc_value *svc, void *affin,
					const void *akey, void *slots, void *backends, __u32 hash,
					__u32 *backend_id)
{
	struct porin_lb_affinity_value aval = {};
	void *be = 0;
	__u64 now = 0;
	__u32 id = 0;

	if (svc->backend_count == 0)
		return 0;
	if (lb_has_affinity(svc)) {
		struct porin_lb_affinity_value *known;

		now = bpf_ktime_get_ns();
		known = bpf_map_lookup_elem(affin, akey);
		if (known && now - known->last_used_ns <= lb_affinity_timeout_ns(svc)) {
			id = known->backend_id;
			be = bpf_map_lookup_elem(backends, &id);
		}
	}
	if (!be && CFG_LB_MAGLEV) {
		id = lb_maglev_backend(svc->service_id, hash);
		if (id)
			be = bpf_map_lookup_elem(backends, &id);
	}
	if (!be) {
		struct porin_lb_slot_key slot = {
			.service_id = svc->service_id,
			.slot = bpf_get_prandom_u32() % svc->backend_count,
		};
		__u32 *slot_id = bpf_map_lookup_elem(slots, &slot);

		if (!slot_id)
			return 0;
		id = *slot_id;
		be = bpf_map_lookup_elem(backends, &id);
		if (!be)
			return 0;
	}
	if (lb_has_affinity(svc)) {
		aval.last_used_ns = now;
		aval.backend_id = id;
		/* LRU: makes room by itself; a failure only costs this client's affinity. */
		bpf_map_update_elem(affin, akey, &aval, BPF_ANY);
	}
	*backend_id = id;
	return be;
}

/*
 * The IPv4 backend for a new connection of `client` (an IPv4 address, or a netns
 * cookie when `cookie` is 1) to `svc` (lb_pick_in on the IPv4 maps).
 */
static __always_inline struct porin_lb_backend *
lb_pick_backend(const struct porin_lb_svc_value *svc, __u64 client, __u8 cookie, __u32 hash,
		__u32 *backend_id)
{
	struct porin_lb_affinity_key akey = {
		.client = client,
		.service_id = svc->service_id,
		.netns_cookie = cookie,
	};

	return lb_pick_in(svc, &porin_lb_affin, &akey, &porin_lb_slots, &porin_lb_backends, hash,
			  backend_id);
}

/*
 * The IPv6 backend for a new connection of `client` (16 bytes: an IPv6 address, or a
 * netns cookie in the first 8 when `cookie` is 1) to an IPv6 frontend `svc`. IPv6
 * service ids live in a range of their own (PORIN_LB6_SERVICE_ID_BASE and up), so their
 * Maglev tables share porin_lb_maglev with IPv4 ones.
 */
static __always_inline struct porin_lb_backend6 *
lb6_pick_backend(const struct porin_lb_svc_value *svc, const __u8 *client, __u8 cookie,
		 __u32 hash, __u32 *backend_id)
{
	struct porin_lb_affinity6_key akey = {
		.service_id = svc->service_id,
		.netns_cookie = cookie,
	};

	__builtin_memcpy(akey.client, client, 16);
	return lb_pick_in(svc, &porin_lb_affin6, &akey, &porin_lb_slots6, &porin_lb_backends6,
			  hash, backend_id);
}
