//go:build ignore
/* SPDX-License-Identifier: (MIT OR GPL-2.0-only) */
/* Cut: iter/tcp walks every TCP socket and destroys the ones in scope whose
 * remote end is in cut_peers (the peer sees a reset). The socket and packet
 * hooks keep the flow blocked until the entry is removed. */
#include "common.h"
#include "maps.h"
#include "events.h"
#include "scope.h"

extern int bpf_sock_destroy(struct sock_common *sk) __ksym;

/* live_state reports whether a socket in this state carries a connection
 * to destroy: listeners, time-wait and request sockets have none, and are
 * skipped before any map lookup (a busy host holds thousands of them). */
static __always_inline bool live_state(__u8 state)
{
	return state != TCP_LISTEN && state != TCP_TIME_WAIT && state != TCP_CLOSE &&
	       state != TCP_NEW_SYN_RECV;
}

/* iter/tcp: destroys matching sockets; writes one byte to the iterator's
 * output per destroyed socket, so the reader counts them. */
SEC("iter/tcp")
int vigil_cut(struct bpf_iter__tcp *ctx)
{
	struct sock_common *skc = ctx->sk_common;
	struct tcp_sock *tp;
	__u8 peer[16], one = 1;

	if (!skc || !live_state(skc->skc_state))
		return 0;
	if (skc->skc_family == AF_INET)
		map_v4(peer, skc->skc_daddr);
	else
		__builtin_memcpy(peer, &skc->skc_v6_daddr, 16);
	if (!peer_is_cut(peer, bpf_ntohs(skc->skc_dport)))
		return 0;
	tp = bpf_skc_to_tcp_sock(skc);
	if (!tp || !cgroup_in_scope(tp->inet_conn.icsk_inet.sk.sk_cgrp_data.cgroup))
		return 0;
	if (bpf_sock_destroy(skc))
		return 0;
	count(COUNTER_SOCK_DESTROYED);
	bpf_seq_write(ctx->meta->seq, &one, sizeof(one));
	return 0;
}
