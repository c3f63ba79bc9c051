/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Every map of the datapath. All are pinned by name (the agent chooses the
 * directory: <pin_root>/<node>/maps) so that they survive agent restarts.
 * Names are prefixed porin_ and stay under 16 bytes (kernel object names).
 */
#pragma once

#include "bpf_api.h"
#include "common.h"

#define PORIN_CT_MAX_ENTRIES 65536
#define PORIN_METRICS_MAX_ENTRIES 1024
#define PORIN_EVENTS_BYTES (1 << 20)
#define PORIN_IPCACHE_MAX_ENTRIES 16384
#define PORIN_ENDPOINTS_MAX_ENTRIES 4096
#define PORIN_LB_SERVICES_MAX_ENTRIES 262144
#define PORIN_LB_SLOTS_MAX_ENTRIES 1048576
#define PORIN_LB_BACKENDS_MAX_ENTRIES 262144
#define PORIN_LB_NAT_MAX_ENTRIES 65536
#define PORIN_LB_AFFINITY_MAX_ENTRIES 65536
#define PORIN_LB_MAGLEV_DEFAULT_M 16381
#define PORIN_POLICY_MAX_ENTRIES 524288
#define PORIN_ENCRYPT_MAX_ENTRIES 4096
#define PORIN_PROXY_MAX_ENTRIES 65536

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, PORIN_CT_MAX_ENTRIES);
	__type(key, struct porin_ct_key);
	__type(value, struct porin_ct_entry);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} porin_ct SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, PORIN_METRICS_MAX_ENTRIES);
	__type(key, struct porin_metrics_key);
	__type(value, struct porin_metrics_value);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} porin_metrics SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, PORIN_EVENTS_BYTES);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} porin_events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, PORIN_IPCACHE_MAX_ENTRIES);
	__type(key, struct porin_ipcache_key);
	__type(value, struct porin_ipcache_value);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} porin_ipcache SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, PORIN_ENDPOINTS_MAX_ENTRIES);
	__type(key, struct porin_endpoint_key);
	__type(value, struct porin_endpoint_value);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} porin_endpoints SEC(".maps");

/* Load balancing: frontends, backend slots, backends (written by the lb plugin). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, PORIN_LB_SERVICES_MAX_ENTRIES);
	__type(key, struct porin_lb_svc_key);
	__type(value, struct porin_lb_svc_value);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} porin_lb_svc SEC(".maps");

/* IPv6 frontends, slots and backends (dual stack; lib/lb_sock6.h). Fixed sizes. */
#define PORIN_LB6_SERVICES_MAX_ENTRIES 65536
#define PORIN_LB6_SLOTS_MAX_ENTRIES 262144
#define PORIN_LB6_BACKENDS_MAX_ENTRIES 65536

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, PORIN_LB6_SERVICES_MAX_ENTRIES);
	__type(key, struct porin_lb_svc6_key);
	__type(value, struct porin_lb_svc_value);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} porin_lb_svc6 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, PORIN_LB6_SLOTS_MAX_ENTRIES);
	__type(key, struct porin_lb_slot_key);
	__type(value, __u32);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} porin_lb_slots6 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, PORIN_LB6_BACKENDS_MAX_ENTRIES);
	__type(key, __u32);
	__type(value, struct porin_lb_backend6);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} porin_lb_backends6 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, PORIN_LB_SLOTS_MAX_ENTRIES);
	__type(key, struct porin_lb_slot_key);
	__type(value, __u32);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} porin_lb_slots SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, PORIN_LB_BACKENDS_MAX_ENTRIES);
	__type(key, __u32);
	__type(value, struct porin_lb_backend);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} porin_lb_backends SEC(".maps");

/*
 * Maglev (CFG_LB_MAGLEV): service id -> that service's lookup table, one inner array of
 * a single element holding M backend ids (M = CFG_LB_MAGLEV_M), so a table costs M * 4
 * bytes and only services with backends have one. The lb plugin replaces a service's
 * table atomically by inserting a new inner map. The agent creates this map itself
 * (the template below only fixes the default M) so that M follows the configuration.
 */
struct porin_lb_maglev_inner {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32[PORIN_LB_MAGLEV_DEFAULT_M]);
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH_OF_MAPS);
	__uint(max_entries, PORIN_LB_SERVICES_MAX_ENTRIES);
	__type(key, __u32);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
	__array(values, struct porin_lb_maglev_inner);
} porin_lb_maglev SEC(".maps");

/* Translated connections (written by the datapath): forward and reverse. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, PORIN_LB_NAT_MAX_ENTRIES);
	__type(key, struct porin_ct_key);
	__type(value, struct porin_lb_nat_entry);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} porin_lb_nat SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, PORIN_LB_NAT_MAX_ENTRIES);
	__type(key, struct porin_ct_key);
	__type(value, struct porin_lb_nat_entry);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} porin_lb_rnat SEC(".maps");

/* porin_lb_affin: sessionAffinity: ClientIP, {client, service id} -> {backend id, last use}. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, PORIN_LB_AFFINITY_MAX_ENTRIES);
	__type(key, struct porin_lb_affinity_key);
	__type(value, struct porin_lb_affinity_value);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} porin_lb_affin SEC(".maps");

/* porin_lb_affin6: the same for IPv6 frontends (struct porin_lb_affinity6_key). */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, PORIN_LB_AFFINITY_MAX_ENTRIES);
	__type(key, struct porin_lb_affinity6_key);
	__type(value, struct porin_lb_affinity_value);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} porin_lb_affin6 SEC(".maps");

/* NodePort translations (written by host.c): forward and reverse (struct porin_np_nat). */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, PORIN_LB_NAT_MAX_ENTRIES);
	__type(key, struct porin_ct_key);
	__type(value, struct porin_np_nat);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} porin_np_nat SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, PORIN_LB_NAT_MAX_ENTRIES);
	__type(key, struct porin_ct_key);
	__type(value, struct porin_np_nat);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} porin_np_rnat SEC(".maps");

/* Policy (written by the policy plugin): default deny per endpoint and direction, and
 * allow/deny entries. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, PORIN_ENDPOINTS_MAX_ENTRIES);
	__type(key, struct porin_policy_ep_key);
	__type(value, struct porin_policy_ep_value);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} porin_policy_ep SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, PORIN_POLICY_MAX_ENTRIES);
	__type(key, struct porin_policy_key);
	__type(value, struct porin_policy_value);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} porin_policy SEC(".maps");

/* Proxy redirection: client side of a redirected connection -> its original destination
 * (bpf/lib/proxy.h). LRU: entries of finished connections age out. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, PORIN_PROXY_MAX_ENTRIES);
	__type(key, struct porin_proxy_key);
	__type(value, struct porin_proxy_value);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} porin_proxy_redir SEC(".maps");

/* Encryption tunnel map: remote pod CIDR -> WireGuard device ifindex (__u32). */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, PORIN_ENCRYPT_MAX_ENTRIES);
	__type(key, struct porin_encrypt_key);
	__type(value, __u32);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} porin_encrypt SEC(".maps");
