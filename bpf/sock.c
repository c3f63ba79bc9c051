/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Socket programs, attached to the node's cgroup v2 (so to every pod's cgroup
 * below it) when socket-level load balancing is on:
 *   porin_sock_connect4:     connect() of TCP and UDP sockets
 *   porin_sock_sendmsg4:     sendmsg() of unconnected UDP sockets
 *   porin_sock_recvmsg4:     recvmsg() of UDP sockets (the reply's source)
 *   porin_sock_getpeername4: getpeername()
 * and their IPv6 counterparts porin_sock_{connect,sendmsg,recvmsg,getpeername}6
 * (dual stack: lib/lb_sock6.h).
 * The logic lives in lib/lb_sock.h; maps are shared with pod.o by pin name.
 */
#include "lib/bpf_api.h"
#include "lib/common.h"
#include "lib/maps.h"
#include "lib/lb_sock.h"
#include "lib/lb_sock6.h"

SEC("cgroup/connect4")
int porin_sock_connect4(struct bpf_sock_addr *ctx)
{
	return lb_sock_fwd(ctx);
}

SEC("cgroup/sendmsg4")
int porin_sock_sendmsg4(struct bpf_sock_addr *ctx)
{
	return lb_sock_fwd(ctx);
}

SEC("cgroup/recvmsg4")
int porin_sock_recvmsg4(struct bpf_sock_addr *ctx)
{
	return lb_sock_rev(ctx);
}

SEC("cgroup/getpeername4")
int porin_sock_getpeername4(struct bpf_sock_addr *ctx)
{
	return lb_sock_rev(ctx);
}

SEC("cgroup/connect6")
int porin_sock_connect6(struct bpf_sock_addr *ctx)
{
	return lb_sock6_fwd(ctx);
}

SEC("cgroup/sendmsg6")
int porin_sock_sendmsg6(struct bpf_sock_addr *ctx)
{
	return lb_sock6_fwd(ctx);
}

SEC("cgroup/recvmsg6")
int porin_sock_recvmsg6(struct bpf_sock_addr *ctx)
{
	return lb_sock6_rev(ctx);
}

SEC("cgroup/getpeername6")
int porin_sock_getpeername6(struct bpf_sock_addr *ctx)
{
	return lb_sock6_rev(ctx);
}

char _license[] SEC("license") = "Dual BSD/GPL";
