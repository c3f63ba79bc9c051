/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Load-time switches.
 *
 * This is THE uniform switch mechanism of the Porin datapath: every feature
 * toggle or node constant is a `volatile const` global in .rodata, named
 * CFG_*, with its default here. The agent overrides them before loading with
 * aya's EbpfLoader::override_global (DatapathConfig::switches). Because .rodata
 * is frozen, the verifier sees the values as constants and prunes the branches
 * of disabled features: a switch that is off costs nothing at run time.
 */
#pragma once

#include "bpf_api.h"

/* Numeric id of this node, copied into every event. */
volatile const __u32 CFG_NODE_ID = 0;
/* 1: emit aggregated flow events into the ring buffer. */
volatile const __u32 CFG_EMIT_EVENTS = 1;
/* Reserved for the policy plugin: 0 until it exists. */
volatile const __u32 CFG_ENABLE_POLICY = 0;

/*
 * Switches of plugins whose datapath parts land later. They are defined now so
 * every plugin's contribution loads today; the code they gate comes with the
 * plugin (load balancing, policy audit). CFG_ENABLE_WIREGUARD (flows marked encrypted) and
 * CFG_ENCRYPTION_STRICT (drops) gate lib/encrypt.h.
 */
volatile const __u32 CFG_ENABLE_LB = 0;
volatile const __u32 CFG_ENABLE_SOCKET_LB = 0;
volatile const __u32 CFG_LB_MAGLEV = 0;
/* Maglev lookup table size M (a prime; `[plugins.lb] maglev_table_size`). The agent
 * creates porin_lb_maglev with tables of exactly M entries before loading (the value
 * size of the map-in-map template is what the verifier checks table[hash % M] against). */
volatile const __u32 CFG_LB_MAGLEV_M = 16381;
volatile const __u32 CFG_POLICY_AUDIT = 0;
volatile const __u32 CFG_ENABLE_WIREGUARD = 0;
volatile const __u32 CFG_ENCRYPTION_STRICT = 0;

/* NodePort (lb plugin): reverse-translate NodePort replies of local backends in the pod
 * program, and the node's IPv4 address (network byte order) that wildcard NodePort
 * frontends answer on and remote-backend connections are SNATed to. */
volatile const __u32 CFG_ENABLE_NODEPORT = 0;
volatile const __u32 CFG_NODE_IPV4 = 0;
/* IPv6 NodePort (lib/nodeport6.h): the node's IPv6 address (`[agent] node_ip_v6`), as four
 * words in network byte order, that [::] NodePort frontends answer on and remote-backend
 * connections are SNATed to. All zero: no IPv6 NodePort. */
volatile const __u32 CFG_NODE_IPV6_0 = 0;
volatile const __u32 CFG_NODE_IPV6_1 = 0;
volatile const __u32 CFG_NODE_IPV6_2 = 0;
volatile const __u32 CFG_NODE_IPV6_3 = 0;
