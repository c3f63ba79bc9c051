/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * THE single source of truth for every struct shared between the C datapath
 * and Rust (core/src/datapath/abi.rs). core/build.rs compiles a host program
 * that prints sizeof/offsetof of every field below; a Rust unit test compares
 * them with the #[repr(C)] mirrors. All padding is explicit so the layout is
 * the same on every architecture and for every compiler.
 *
 * This header is included both by BPF programs and by host C programs: it may
 * only depend on <linux/types.h>.
 */
#pragma once

#include <linux/types.h>

/* Address families used in keys and events (not AF_*: these are stable). */
#define PORIN_FAMILY_IPV4 4
#define PORIN_FAMILY_IPV6 6

/* Directions, as seen from the pod (metrics key and events). */
#define PORIN_DIR_INGRESS 1 /* to the pod: tcx egress of the host-side veth */
#define PORIN_DIR_EGRESS 2  /* from the pod: tcx ingress of the host-side veth */

/* Verdicts, numbered like Hubble's flow.proto Verdict. */
#define PORIN_VERDICT_FORWARDED 1
#define PORIN_VERDICT_DROPPED 2
#define PORIN_VERDICT_AUDIT 4 /* policy audit mode: would have been dropped, forwarded */

/* Event types. */
#define PORIN_EVENT_NEW_CONN 1  /* conntrack entry created */
#define PORIN_EVENT_TCP_FLAGS 2 /* SYN/FIN/RST seen for the first time in a direction */
#define PORIN_EVENT_DROP 3      /* every drop */
#define PORIN_EVENT_POLICY_VERDICT 4 /* a new connection allowed by a policy entry (or audited) */

/*
 * Which part of a policy entry matched (Cilium's PolicyMatchType numbering, Hubble's
 * Flow.policy_match_type): none, L3 only, L3+L4, L4 only, all, L3+protocol, protocol only.
 */
#define PORIN_POLICY_MATCH_NONE 0
#define PORIN_POLICY_MATCH_L3_ONLY 1
#define PORIN_POLICY_MATCH_L3_L4 2
#define PORIN_POLICY_MATCH_L4_ONLY 3
#define PORIN_POLICY_MATCH_ALL 4
#define PORIN_POLICY_MATCH_L3_PROTO 5
#define PORIN_POLICY_MATCH_PROTO_ONLY 6

/* Flags of a flow event. */
#define PORIN_EVENT_F_ENCRYPTED 0x01 /* the packet crossed (or is routed into) the WireGuard tunnel */

/* Reserved identities (Cilium's numbering). */
#define PORIN_IDENTITY_HOST 1
#define PORIN_IDENTITY_WORLD 2

/*
 * Metrics reasons: 0 is "forwarded", 130..255 are Cilium's drop reasons
 * (flow.proto DropReason). Values 1..129 are Porin's own non-drop counters.
 */
#define PORIN_REASON_FORWARDED 0
#define PORIN_REASON_EVENT_LOST 1 /* ring buffer full: an event could not be reserved */

/*
 * Conntrack key: the 5-tuple as seen on the wire for the packet that created
 * the entry. Addresses: IPv4 uses the first 4 bytes, the rest is zero.
 * Ports are in host byte order. ICMP echo: the identifier is the source port
 * of requests and the destination port of replies, so that a reply matches
 * the reversed tuple of its request.
 */
struct porin_ct_key {
	__u8 saddr[16];
	__u8 daddr[16];
	__u16 sport;
	__u16 dport;
	__u8 family;
	__u8 l4_proto;
	__u8 pad[2];
};

/* Conntrack entry. Index 0 of the arrays is the original direction, 1 the reply. */
struct porin_ct_entry {
	__u64 created_ns;
	__u64 last_seen_ns;
	__u64 packets[2];
	__u64 bytes[2];
	__u32 tcp_flags_seen[2]; /* u32 so that atomic fetch-or works on it */
};

/*
 * Ring buffer record. Fields are only ever appended: a reader accepts a record of an
 * older, shorter layout (PORIN_FLOW_EVENT_V1_SIZE = 80 bytes, up to daddr) and reads the
 * missing fields as zero, so events written by the previous programs still decode while
 * a restarted agent swaps them.
 */
struct porin_flow_event {
	__u64 ktime_ns;
	__u8 type;        /* PORIN_EVENT_* */
	__u8 verdict;     /* PORIN_VERDICT_* */
	__u8 drop_reason; /* Cilium DropReason, 0 when forwarded */
	__u8 direction;   /* PORIN_DIR_*: observation point */
	__u8 family;      /* PORIN_FAMILY_*, 0 when the L3 header could not be read */
	__u8 l4_proto;    /* IPPROTO_* */
	__u8 tcp_flags;
	__u8 icmp_type;
	__u8 icmp_code;
	__u8 is_reply;
	__u8 flags; /* PORIN_EVENT_F_* */
	__u8 pad;
	__u16 sport; /* host byte order */
	__u16 dport;
	__u32 ifindex;
	__u32 src_identity;
	__u32 dst_identity;
	__u32 endpoint_id;
	__u32 pkt_len;
	__u32 node_id;
	__u8 saddr[16];
	__u8 daddr[16];
	/* Since v2: the porin_policy_value.policy_id of the policy entry that decided a new
	 * connection (policy verdicts, drops 181 and audits of a deny entry), 0 when no entry
	 * decided it (default deny, no policy). */
	__u32 policy_id;
	__u8 policy_match; /* PORIN_POLICY_MATCH_* of that entry */
	__u8 pad2[3];
};

/* Per-CPU metrics. */
struct porin_metrics_key {
	__u8 reason;    /* PORIN_REASON_* or a Cilium drop reason */
	__u8 direction; /* PORIN_DIR_* */
	__u8 pad[2];
};

struct porin_metrics_value {
	__u64 packets;
	__u64 bytes;
};

/*
 * ipcache LPM trie key. prefixlen counts bits from the start of `family`,
 * so a /24 IPv4 prefix has prefixlen 32 + 24 (family and padding are always
 * matched in full).
 */
struct porin_ipcache_key {
	__u32 prefixlen;
	__u8 family;
	__u8 pad[3];
	__u8 addr[16];
};

struct porin_ipcache_value {
	__u32 identity;
	__u8 flags;
	__u8 pad[3];
};

/* Local endpoints: address -> endpoint. */
struct porin_endpoint_key {
	__u8 family;
	__u8 pad[3];
	__u8 addr[16];
};

struct porin_endpoint_value {
	__u32 endpoint_id;
	__u32 ifindex;
	__u32 identity;
};

/*
 * Load balancing (bpf/lib/lb.h). IPv4 only for now. Addresses are in network
 * byte order (as on the wire), ports in host byte order.
 *
 * A frontend (ClusterIP:port/protocol) maps to a service id and its backend
 * count; backends of a service sit in slots 0..count-1 ({service id, slot} ->
 * backend id), and a backend id resolves to an address. Ids are u32: there is
 * no 65,535 limit.
 */
struct porin_lb_svc_key {
	__u32 vip;
	__u16 port;
	__u8 proto; /* IPPROTO_TCP or IPPROTO_UDP */
	__u8 pad;
};

struct porin_lb_svc_value {
	__u32 service_id;
	__u32 backend_count; /* 0: the service exists but has no backend */
	__u32 flags;         /* PORIN_LB_F_* in the low byte, affinity timeout above */
};

/*
 * porin_lb_svc_value.flags: the low 8 bits are flags, the upper 24 bits the
 * sessionAffinity timeout in seconds (Kubernetes caps it at 86400 < 2^24).
 */
#define PORIN_LB_F_AFFINITY 0x1 /* sessionAffinity: ClientIP */
#define PORIN_LB_AFFINITY_TIMEOUT_SHIFT 8

/*
 * sessionAffinity: ClientIP (porin_lb_affin, LRU): the backend a client was
 * last sent to by one service, and when (bpf_ktime_get_ns). The client is its
 * IPv4 address (per-packet LB) or, for socket LB, where the source address is not
 * known at connect(), its network namespace cookie (one pod = one netns).
 */
struct porin_lb_affinity_key {
	__u64 client;
	__u32 service_id;
	__u8 netns_cookie; /* 1: `client` is a netns cookie, 0: an IPv4 address */
	__u8 pad[3];
};

/*
 * porin_lb_affin6: the same for IPv6 frontends. The client is its IPv6 address
 * (per-packet LB) or, for socket LB, its netns cookie in the first 8 bytes.
 */
struct porin_lb_affinity6_key {
	__u8 client[16];
	__u32 service_id;
	__u8 netns_cookie; /* 1: `client` holds a netns cookie, 0: an IPv6 address */
	__u8 pad[3];
};

/* IPv6 service ids start here (IPv4 ones from 1): both share porin_lb_maglev. */
#define PORIN_LB6_SERVICE_ID_BASE 0x80000000U

struct porin_lb_affinity_value {
	__u64 last_used_ns;
	__u32 backend_id;
	__u32 pad;
};

struct porin_lb_slot_key {
	__u32 service_id;
	__u32 slot;
};

struct porin_lb_backend {
	__u32 addr;
	__u16 port;
	__u8 pad[2];
};

/*
 * IPv6 ClusterIPs (dual stack): the same model in maps of their own, porin_lb_svc6 ->
 * porin_lb_slots6 -> porin_lb_backends6, with ids of their own (the value of a frontend is
 * a struct porin_lb_svc_value). Served by the socket hooks (connect6, sendmsg6, recvmsg6,
 * getpeername6). Addresses in network byte order, ports in host byte order.
 */
struct porin_lb_svc6_key {
	__u8 vip[16];
	__u16 port;
	__u8 proto; /* IPPROTO_TCP or IPPROTO_UDP */
	__u8 pad;
};

struct porin_lb_backend6 {
	__u8 addr[16];
	__u16 port;
	__u8 pad[2];
};

/*
 * One translated connection, in porin_lb_nat (forward: keyed by the tuple the
 * client sent, addr/port/id = the chosen backend) and porin_lb_rnat (reverse:
 * keyed by the translated client->backend tuple, addr/port = the frontend,
 * id = the service id).
 */
struct porin_lb_nat_entry {
	__u32 addr;
	__u16 port;
	__u8 pad[2];
	__u32 id;
};

/*
 * NodePort (bpf/lib/nodeport.h, bpf/host.c). NodePort frontends live in
 * porin_lb_svc like ClusterIPs, keyed {node IP, nodePort, proto} or, for every
 * address of the node, the wildcard {0.0.0.0, nodePort, proto}; their slots and
 * backends are the same maps and ids.
 *
 * A translated NodePort connection is one porin_np_nat entry per direction:
 * porin_np_nat keyed by the tuple the client sent, porin_np_rnat keyed by the
 * reply as it arrives (from the backend). The value is what the packet becomes:
 * its new source and destination; ifindex != 0 sends the rewritten packet out of
 * that device (bpf_redirect_neigh), 0 lets the stack route it.
 * Addresses in network byte order, ports in host byte order.
 */
struct porin_np_nat {
	__u32 saddr;
	__u32 daddr;
	__u16 sport;
	__u16 dport;
	__u32 id; /* forward: backend id; reverse: service id */
	__u32 ifindex;
};

/*
 * Policy (bpf/lib/policy.h), written by the policy plugin. All fields are in
 * host byte order. 0 in identity, proto or dport means "any".
 *
 * porin_policy_ep: {endpoint id, direction} -> default-deny flag.
 * porin_policy:    {endpoint id, direction, peer identity, proto, dport} -> verdict.
 */
struct porin_policy_ep_key {
	__u32 endpoint_id;
	__u8 direction; /* PORIN_DIR_INGRESS or PORIN_DIR_EGRESS */
	__u8 pad[3];
};

struct porin_policy_ep_value {
	__u8 default_deny; /* 1: a new connection needs an allow entry */
	__u8 pad[3];
};

struct porin_policy_key {
	__u32 endpoint_id;
	__u32 identity; /* peer identity, 0 = any */
	__u16 dport;    /* destination port, 0 = any */
	__u8 proto;     /* IPPROTO_*, 0 = any */
	__u8 direction;
};

#define PORIN_POLICY_ALLOW 1
#define PORIN_POLICY_DENY 2

/* Not a peer: an ALLOW entry with this identity marks a port of the endpoint that has HTTP
 * rules for some peers (its proxy_port is the HTTP proxy's). Every connection another entry
 * allows on that port goes to the proxy too, as in Cilium: the peers allowed without HTTP
 * rules get an allow-all L7 rule there, and their requests become L7 flows. The entry
 * allows nothing by itself (lib/policy.h). */
#define PORIN_POLICY_L7_PORT_IDENTITY 0xffffffffU

struct porin_policy_value {
	__u32 policy_id;   /* short id of the policy that wrote the entry (flows, debugging) */
	__u8 action;       /* PORIN_POLICY_ALLOW or PORIN_POLICY_DENY */
	__u8 pad;
	__u16 proxy_port;  /* ALLOW only: != 0 steers the connection to the node's proxy on
			    * this port (DNS or HTTP rules), host byte order */
};

/*
 * Proxy redirection (bpf/lib/proxy.h). A connection whose verdict carries a proxy port is
 * DNATed to {CFG_NODE_IPV4, proxy port}; its original destination is kept here, keyed by
 * the client's side of the tuple (what the proxy sees as its peer). The proxy reads the
 * entry to learn where the client was going (plugins/policy/src/proxy), and the pod
 * program uses it to give the proxy's replies the original destination as their source.
 * IPv4 only; addresses in network byte order, ports in host byte order.
 */
struct porin_proxy_key {
	__u32 client_addr;
	__u16 client_port;
	__u8 proto; /* IPPROTO_TCP or IPPROTO_UDP */
	__u8 pad;
};

struct porin_proxy_value {
	__u32 orig_daddr;   /* where the client sent it (after load balancing) */
	__u16 orig_dport;
	__u16 proxy_port;
	__u32 endpoint_id;  /* the client's local endpoint */
	__u32 dst_identity; /* identity of the original destination */
};

/* Encryption tunnel map (written by the encryption plugin): the pod CIDR of every other
 * node -> the ifindex of the WireGuard device its traffic leaves through (0 while the
 * device is down: in strict mode everything to that CIDR is dropped). LPM trie key, IPv4. */
struct porin_encrypt_key {
	__u32 prefixlen;
	__u32 addr; /* network byte order */
};
