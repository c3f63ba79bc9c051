/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Node device program, attached to tcx ingress of the node's external devices
 * (`[plugins.lb] devices`, default the interface holding the node IP):
 *   porin_from_netdev: NodePort translation, IPv4 (lib/nodeport.h) and IPv6
 *   (lib/nodeport6.h).
 * and to tcx ingress of the WireGuard device (encryption plugin, L3):
 *   porin_from_tunnel: NodePort replies that came back through the tunnel.
 * Maps are shared with pod.o by pin name. Non-IP, non-NodePort traffic passes
 * untouched: this program never drops what it does not own.
 */
#include "lib/bpf_api.h"
#include "lib/common.h"
#include "lib/config.h"
#include "lib/maps.h"
#include "lib/parse.h"
#include "lib/nodeport.h"
#include "lib/nodeport6.h"

SEC("classifier")
int porin_from_netdev(struct __sk_buff *skb)
{
	struct pkt_info p = {};

	if (parse_packet(skb, &p) != PARSE_OK)
		return TC_ACT_OK;
	if (p.family == PORIN_FAMILY_IPV6)
		return np6_from_netdev(skb, &p);
	return np_from_netdev(skb, &p);
}

/* tcx ingress of the WireGuard device (an L3 device: no Ethernet header), with the
 * encryption plugin on: NodePort replies that came back through the tunnel. */
SEC("classifier")
int porin_from_tunnel(struct __sk_buff *skb)
{
	struct pkt_info p = {};

	if (skb->protocol != bpf_htons(ETH_P_IP))
		return TC_ACT_OK;
	if (parse_ipv4(skb, 0, &p) != PARSE_OK)
		return TC_ACT_OK;
	return np_from_tunnel(skb, &p);
}

char _license[] SEC("license") = "Dual BSD/GPL";
