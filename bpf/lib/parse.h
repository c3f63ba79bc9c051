/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Packet parsing: Ethernet, IPv4 (options, fragments), IPv6 (a few extension
 * headers), TCP, UDP, ICMP, ICMPv6.
 *
 * Headers are copied with bpf_skb_load_bytes rather than read in place: it
 * works on non-linear skbs and fails cleanly on truncated packets, which is
 * exactly the truncation check we need.
 */
#pragma once

#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/tcp.h>
#include <linux/udp.h>

#include "bpf_api.h"
#include "common.h"
#include "drop_reasons.h"

#define PARSE_OK 0
#define PARSE_NOT_IP 1 /* pass untouched (ARP, ...) */
#define PARSE_LINK_LOCAL 2 /* IPv6 neighbour discovery or MLD: pass untouched, like ARP */

/* Bound on the IPv6 extension headers we walk before giving up on L4. */
#define IPV6_MAX_EXT_HDRS 4

#define TCP_FLAG_FIN 0x01
#define TCP_FLAG_SYN 0x02
#define TCP_FLAG_RST 0x04

/*
 * ICMP and ICMPv6 share this 8-byte layout for what we read. Defined here:
 * <linux/icmp.h> drags in libc headers that do not exist for -target bpf.
 */
struct icmp_hdr {
	__u8 type;
	__u8 code;
	__be16 checksum;
	__be16 echo_id;
	__be16 echo_seq;
};

#define ICMP_ECHOREPLY 0
#define ICMP_ECHO 8
#define ICMPV6_ECHO_REQUEST 128
#define ICMPV6_ECHO_REPLY 129
#define ICMPV6_MLD_QUERY 130
#define ICMPV6_MLD_DONE 132
#define ICMPV6_MLD2_REPORT 143
#define ICMPV6_ND_ROUTER_SOLICIT 133
#define ICMPV6_ND_REDIRECT 137

#define IP_MF 0x2000
#define IP_OFFSET 0x1fff

struct pkt_info {
	__u8 saddr[16];
	__u8 daddr[16];
	__u16 sport; /* host byte order */
	__u16 dport;
	__u8 family;
	__u8 l4_proto;
	__u8 tcp_flags;
	__u8 icmp_type;
	__u8 icmp_code;
	__u8 has_l4; /* 0 for non-first fragments and unknown protocols */
	__u16 l4_off; /* offset of the L4 header from the start of the frame */
};

/* ICMP(v6) echo: identifier as sport of requests, dport of replies. */
static __always_inline void icmp_ports(struct pkt_info *p, __u16 id_be, __u8 req, __u8 rep)
{
	if (p->icmp_type == req)
		p->sport = bpf_ntohs(id_be);
	else if (p->icmp_type == rep)
		p->dport = bpf_ntohs(id_be);
}

/* Returns PARSE_OK or a negative DROP_* reason. */
static __always_inline int parse_l4(struct __sk_buff *skb, __u32 off, struct pkt_info *p)
{
	p->l4_off = (__u16)off;
	switch (p->l4_proto) {
	case IPPROTO_TCP: {
		struct tcphdr tcp;

		if (bpf_skb_load_bytes(skb, off, &tcp, sizeof(tcp)) < 0)
			return DROP_CT_INVALID_HDR;
		if (tcp.doff < 5)
			return DROP_CT_INVALID_HDR;
		p->sport = bpf_ntohs(tcp.source);
		p->dport = bpf_ntohs(tcp.dest);
		/* byte 13 of the TCP header holds CWR..FIN */
		p->tcp_flags = ((__u8 *)&tcp)[13];
		break;
	}
	case IPPROTO_UDP: {
		struct udphdr udp;

		if (bpf_skb_load_bytes(skb, off, &udp, sizeof(udp)) < 0)
			return DROP_CT_INVALID_HDR;
		p->sport = bpf_ntohs(udp.source);
		p->dport = bpf_ntohs(udp.dest);
		break;
	}
	case IPPROTO_ICMP:
	case IPPROTO_ICMPV6: {
		struct icmp_hdr icmp;

		if (bpf_skb_load_bytes(skb, off, &icmp, sizeof(icmp)) < 0)
			return DROP_CT_INVALID_HDR;
		p->icmp_type = icmp.type;
		p->icmp_code = icmp.code;
		if (p->l4_proto == IPPROTO_ICMP)
			icmp_ports(p, icmp.echo_id, ICMP_ECHO, ICMP_ECHOREPLY);
		else
			icmp_ports(p, icmp.echo_id, ICMPV6_ECHO_REQUEST, ICMPV6_ECHO_REPLY);
		break;
	}
	default:
		/* Unknown L4: tracked by addresses and protocol only. */
		return PARSE_OK;
	}
	p->has_l4 = 1;
	return PARSE_OK;
}

static __always_inline int parse_ipv4(struct __sk_buff *skb, __u32 off, struct pkt_info *p)
{
	struct iphdr ip;
	__u32 hlen;

	if (bpf_skb_load_bytes(skb, off, &ip, sizeof(ip)) < 0)
		return DROP_INVALID;
	if (ip.version != 4 || ip.ihl < 5)
		return DROP_INVALID;
	hlen = ip.ihl * 4;
	if (bpf_ntohs(ip.tot_len) < hlen || skb->len < off + hlen)
		return DROP_INVALID;

	p->family = PORIN_FAMILY_IPV4;
	p->l4_proto = ip.protocol;
	__builtin_memcpy(p->saddr, &ip.saddr, 4);
	__builtin_memcpy(p->daddr, &ip.daddr, 4);

	/* Only the first fragment carries the L4 header. */
	if (bpf_ntohs(ip.frag_off) & IP_OFFSET)
		return PARSE_OK;
	return parse_l4(skb, off + hlen, p);
}

static __always_inline int parse_ipv6(struct __sk_buff *skb, __u32 off, struct pkt_info *p)
{
	struct ipv6hdr ip6;
	__u8 nexthdr;
	int ret;
	int i;

	if (bpf_skb_load_bytes(skb, off, &ip6, sizeof(ip6)) < 0)
		return DROP_INVALID;
	if (ip6.version != 6)
		return DROP_INVALID;

	p->family = PORIN_FAMILY_IPV6;
	__builtin_memcpy(p->saddr, &ip6.saddr, 16);
	__builtin_memcpy(p->daddr, &ip6.daddr, 16);
	nexthdr = ip6.nexthdr;
	off += sizeof(ip6);

	/* Bounded walk so the verifier sees a finite loop. */
#pragma unroll
	for (i = 0; i < IPV6_MAX_EXT_HDRS; i++) {
		__u8 ext[8];

		if (nexthdr != IPPROTO_HOPOPTS && nexthdr != IPPROTO_ROUTING &&
		    nexthdr != IPPROTO_DSTOPTS && nexthdr != IPPROTO_FRAGMENT &&
		    nexthdr != IPPROTO_AH)
			break;
		if (bpf_skb_load_bytes(skb, off, ext, sizeof(ext)) < 0)
			return DROP_INVALID_EXTHDR;
		if (nexthdr == IPPROTO_FRAGMENT) {
			__u16 frag_off = ((__u16)ext[2] << 8) | ext[3];

			nexthdr = ext[0];
			off += 8;
			/* Later fragments carry no L4 header. */
			if (frag_off & 0xfff8) {
				p->l4_proto = nexthdr;
				return PARSE_OK;
			}
			continue;
		}
		if (nexthdr == IPPROTO_AH)
			off += ((__u32)ext[1] + 2) * 4;
		else
			off += ((__u32)ext[1] + 1) * 8;
		nexthdr = ext[0];
	}
	p->l4_proto = nexthdr;
	if (nexthdr == IPPROTO_HOPOPTS || nexthdr == IPPROTO_ROUTING ||
	    nexthdr == IPPROTO_DSTOPTS || nexthdr == IPPROTO_FRAGMENT || nexthdr == IPPROTO_AH)
		return DROP_INVALID_EXTHDR; /* too many extension headers */
	ret = parse_l4(skb, off, p);
	if (ret != PARSE_OK || p->l4_proto != IPPROTO_ICMPV6 || !p->has_l4)
		return ret;
	/* Link-scope ICMPv6 is the IPv6 counterpart of ARP and passes like it: neighbour
	 * discovery only with hop limit 255 (RFC 4861: no router forwarded it), MLD only from
	 * a link-local source (RFC 3810). Neither can carry a connection to another host. */
	if (p->icmp_type >= ICMPV6_ND_ROUTER_SOLICIT && p->icmp_type <= ICMPV6_ND_REDIRECT &&
	    ip6.hop_limit == 255)
		return PARSE_LINK_LOCAL;
	if (((p->icmp_type >= ICMPV6_MLD_QUERY && p->icmp_type <= ICMPV6_MLD_DONE) ||
	     p->icmp_type == ICMPV6_MLD2_REPORT) &&
	    p->saddr[0] == 0xfe && (p->saddr[1] & 0xc0) == 0x80)
		return PARSE_LINK_LOCAL;
	return PARSE_OK;
}

/* Returns PARSE_OK, PARSE_NOT_IP, PARSE_LINK_LOCAL or a negative DROP_* reason. */
static __always_inline int parse_packet(struct __sk_buff *skb, struct pkt_info *p)
{
	struct ethhdr eth;

	if (bpf_skb_load_bytes(skb, 0, &eth, sizeof(eth)) < 0)
		return DROP_INVALID;
	switch (bpf_ntohs(eth.h_proto)) {
	case ETH_P_IP:
		return parse_ipv4(skb, sizeof(eth), p);
	case ETH_P_IPV6:
		return parse_ipv6(skb, sizeof(eth), p);
	default:
		return PARSE_NOT_IP;
	}
}
