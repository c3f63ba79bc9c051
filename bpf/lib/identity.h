/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Address -> security identity (ipcache) and local endpoint lookups. */
#pragma once

#include "bpf_api.h"
#include "common.h"
#include "maps.h"

static __always_inline __u32 ipcache_identity(__u8 family, const __u8 *addr)
{
	struct porin_ipcache_key key = {
		/* family and padding always match in full, then the address */
		.prefixlen = 32 + (family == PORIN_FAMILY_IPV4 ? 32 : 128),
		.family = family,
	};
	struct porin_ipcache_value *val;

	__builtin_memcpy(key.addr, addr, 16);
	val = bpf_map_lookup_elem(&porin_ipcache, &key);
	return val ? val->identity : PORIN_IDENTITY_WORLD;
}

static __always_inline __u32 endpoint_id(__u8 family, const __u8 *addr)
{
	struct porin_endpoint_key key = { .family = family };
	struct porin_endpoint_value *val;

	__builtin_memcpy(key.addr, addr, 16);
	val = bpf_map_lookup_elem(&porin_endpoints, &key);
	return val ? val->endpoint_id : 0;
}
