//go:build ignore
/* SPDX-License-Identifier: (MIT OR GPL-2.0-only) */
/* Inbound enforcement and packet blocking: cgroup_skb ingress and egress at
 * the scope, and the inet_sock_set_state observer of accepted connections.
 *
 * Ingress drops packets to a protected local port from peers the table does
 * not admit (the peer sees a timeout), and, for every port, packets of cut
 * flows and of a quarantined scope. Egress drops packets of cut flows and of
 * a quarantined scope. IPv6 extension headers are not walked: a packet
 * carrying them is judged without ports. */
#include "common.h"
#include "maps.h"
#include "events.h"
#include "scope.h"

#define SKB_PASS 1
#define SKB_DROP 0
#define TCP_FLAG_SYN 0x02
#define TCP_FLAG_RST 0x04
#define TCP_FLAG_ACK 0x10

/* packet is what the packet hooks know of one IP packet. */
struct packet {
	__u8 src[16];
	__u8 dst[16];
	__u16 sport;	/* host order */
	__u16 dport;
	__u8 proto;	/* enum vigil_proto */
	__u8 tcp_flags;
};

struct ingress_judgement {
	__u32 rule_id;
	__u32 reason;	/* enum vigil_counter */
	__u8 verdict;	/* VERDICT_NONE: port not protected */
};

static __always_inline int parse_ports(struct __sk_buff *skb, __u32 off, struct packet *p)
{
	__u16 ports[2];

	if (p->proto != PROTO_TCP && p->proto != PROTO_UDP)
		return 0;
	if (bpf_skb_load_bytes(skb, off, ports, sizeof(ports)))
		return -1;
	p->sport = bpf_ntohs(ports[0]);
	p->dport = bpf_ntohs(ports[1]);
	if (p->proto == PROTO_TCP)
		bpf_skb_load_bytes(skb, off + 13, &p->tcp_flags, 1);
	return 0;
}

static __always_inline int parse_packet(struct __sk_buff *skb, struct packet *p)
{
	if (skb->protocol == bpf_htons(0x0800)) {
		struct iphdr ip;

		if (bpf_skb_load_bytes(skb, 0, &ip, sizeof(ip)))
			return -1;
		map_v4(p->src, ip.saddr);
		map_v4(p->dst, ip.daddr);
		p->proto = proto_of(ip.protocol);
		return parse_ports(skb, ip.ihl * 4, p);
	}
	if (skb->protocol == bpf_htons(0x86DD)) {
		struct ipv6hdr ip6;

		if (bpf_skb_load_bytes(skb, 0, &ip6, sizeof(ip6)))
			return -1;
		__builtin_memcpy(p->src, &ip6.saddr, 16);
		__builtin_memcpy(p->dst, &ip6.daddr, 16);
		p->proto = proto_of(ip6.nexthdr);
		return parse_ports(skb, sizeof(ip6), p);
	}
	return -1;
}

/* protected_range returns the index of the protected range holding port, or
 * -1 when the port is not protected. */
static __always_inline int protected_range(struct table_settings *st, __u16 port, __u8 proto)
{
	for (int i = 0; i < MAX_PROTECTED_RANGES; i++) {
		struct port_range *r = &st->protected[i];

		if (i >= st->protected_count)
			break;
		if (port >= r->min && port <= r->max && proto_matches(r->proto, proto))
			return i;
	}
	return -1;
}

static __always_inline void judge_peer(__u32 slot, const __u8 peer[16], __u16 port, __u8 proto,
				       struct ingress_judgement *j)
{
	struct prefix_key key = {.prefixlen = 128};
	struct rule_span *span;
	void *trie, *rules;

	trie = bpf_map_lookup_elem(&ingress_prefixes, &slot);
	rules = bpf_map_lookup_elem(&ingress_rules, &slot);
	if (!trie || !rules)
		return;
	__builtin_memcpy(key.addr, peer, 16);
	span = bpf_map_lookup_elem(trie, &key);
	if (!span)
		return;

	for (__u32 i = 0; i < MAX_RULES_PER_PREFIX; i++) {
		__u32 idx = span->first + i;
		struct ingress_rule *r;

		if (i >= span->count)
			break;
		r = bpf_map_lookup_elem(rules, &idx);
		if (!r)
			break;
		if (port < r->port_min || port > r->port_max || !proto_matches(r->proto, proto))
			continue;
		j->verdict = r->verdict;
		j->rule_id = r->rule_id;
		j->reason = r->verdict == VERDICT_DENY ? COUNTER_INGRESS_DENY_RULE
						       : COUNTER_INGRESS_ALLOW_RULE;
		return;
	}
}

/* judge_pending_peer applies the pending-deny overlay; its denies lie inside
 * ports the table being applied protects, so no protected range is needed. */
static __always_inline bool judge_pending_peer(const __u8 peer[16], __u16 port, __u8 proto,
					  struct ingress_judgement *j)
{
	struct pending_ingress *p;
	struct prefix_key key;

	if (!pending_key(peer, &key))
		return false;
	p = bpf_map_lookup_elem(&ingress_pending, &key);
	if (!p)
		return false;

	for (__u32 i = 0; i < MAX_PENDING_RULES; i++) {
		struct ingress_rule *r = &p->rules[i];

		if (i >= p->count)
			break;
		if (port < r->port_min || port > r->port_max || !proto_matches(r->proto, proto))
			continue;
		j->verdict = VERDICT_DENY;
		j->rule_id = r->rule_id;
		j->reason = COUNTER_INGRESS_DENY_RULE;
		return true;
	}
	return false;
}

/* judge_ingress decides a connection from peer to the local port: pending
 * denies first, then the table. */
static __always_inline void judge_ingress(const __u8 peer[16], __u16 port, __u8 proto,
					  struct ingress_judgement *j)
{
	__u32 slot = table_slot();
	struct table_settings *st = bpf_map_lookup_elem(&settings, &slot);
	int range;

	if (judge_pending_peer(peer, port, proto, j))
		return;
	if (!st)
		return;
	range = protected_range(st, port, proto);
	if (range < 0 || range >= MAX_PROTECTED_RANGES)
		return;
	j->verdict = st->protected[range].default_verdict;
	j->reason = j->verdict == VERDICT_DENY ? COUNTER_INGRESS_DENY_DEFAULT
					       : COUNTER_INGRESS_ALLOW_DEFAULT;
	judge_peer(slot, peer, port, proto, j);
	if (j->verdict == VERDICT_AUDIT)
		j->reason = COUNTER_INGRESS_AUDIT;
}

/* blocked reports whether a packet with this remote end is cut or
 * quarantined away, counting the reason. */
static __always_inline bool blocked(const __u8 remote[16], __u16 rport)
{
	__u32 slot = table_slot();
	struct table_settings *st = bpf_map_lookup_elem(&settings, &slot);

	if (peer_is_cut(remote, rport)) {
		count(COUNTER_PACKET_DROP_CUT);
		return true;
	}
	if (st && st->quarantined && !quarantine_allows(st, remote)) {
		count(COUNTER_PACKET_DROP_QUARANTINE);
		return true;
	}
	return false;
}

static __always_inline void report_drop(struct __sk_buff *skb, struct packet *p,
					struct ingress_judgement *j)
{
	struct vigil_event *e;

	if (p->proto == PROTO_TCP && (p->tcp_flags & (TCP_FLAG_SYN | TCP_FLAG_ACK)) != TCP_FLAG_SYN)
		return;
	e = reserve_event(EVENT_ACCEPT);
	if (!e)
		return;
	e->inbound = 1;
	e->cgroup_id = bpf_skb_cgroup_id(skb);
	e->proto = p->proto;
	e->verdict = j->verdict;
	e->rule_id = j->rule_id;
	e->local_port = p->dport;
	e->remote_port = p->sport;
	__builtin_memcpy(e->local_addr, p->dst, 16);
	__builtin_memcpy(e->remote_addr, p->src, 16);
	submit_event(e);
}

/* packet_rules_active reports whether any packet rule is in force, so
 * packets pass unparsed while there is none. */
static __always_inline bool packet_rules_active(bool ingress)
{
	struct scope_info *s = scope_get();
	__u32 slot = table_slot();
	struct table_settings *st = bpf_map_lookup_elem(&settings, &slot);

	if (s && (s->cut_entries || (ingress && s->pending_entries)))
		return true;
	return st && (st->quarantined || (ingress && st->protected_count));
}

/* cgroup_skb/ingress: packets to sockets in scope; 0 drops the packet. */
SEC("cgroup_skb/ingress")
int vigil_ingress(struct __sk_buff *skb)
{
	struct ingress_judgement j = {};
	struct packet p = {};

	if (!packet_rules_active(true) || parse_packet(skb, &p))
		return SKB_PASS;
	if (blocked(p.src, p.sport))
		return SKB_DROP;
	judge_ingress(p.src, p.dport, p.proto, &j);
	if (j.verdict != VERDICT_DENY)
		return SKB_PASS;
	count(j.reason);
	report_drop(skb, &p, &j);
	return SKB_DROP;
}

/* cgroup_skb/egress: packets from sockets in scope; 0 drops the packet.
 * Resets always pass, so the peer of a destroyed socket learns of it. */
SEC("cgroup_skb/egress")
int vigil_egress_skb(struct __sk_buff *skb)
{
	struct packet p = {};

	if (!packet_rules_active(false) || parse_packet(skb, &p))
		return SKB_PASS;
	if (p.proto == PROTO_TCP && (p.tcp_flags & TCP_FLAG_RST))
		return SKB_PASS;
	return blocked(p.dst, p.dport) ? SKB_DROP : SKB_PASS;
}

static __always_inline void sock_peer(const struct sock *sk, __u8 peer[16], __u8 local[16])
{
	if (sk->__sk_common.skc_family == AF_INET) {
		map_v4(peer, sk->__sk_common.skc_daddr);
		map_v4(local, sk->__sk_common.skc_rcv_saddr);
		return;
	}
	__builtin_memcpy(peer, &sk->__sk_common.skc_v6_daddr, 16);
	__builtin_memcpy(local, &sk->__sk_common.skc_v6_rcv_saddr, 16);
}

static __always_inline void conn_key_of(const struct sock *sk, struct conn_key *k)
{
	sock_peer(sk, k->remote, k->local);
	k->family = sk->__sk_common.skc_family;
	k->local_port = sk->__sk_common.skc_num;
	k->remote_port = bpf_ntohs(sk->__sk_common.skc_dport);
}

/* track_conn keeps scope_conns in step with the TCP sockets in scope. It
 * returns whether sk has just been established in scope. */
static __always_inline bool track_conn(const struct sock *sk, int newstate)
{
	struct conn_key k = {};
	__u64 cookie;

	if (sk->sk_protocol != IPPROTO_TCP_NR)
		return false;
	if (newstate != TCP_CLOSE && newstate != TCP_ESTABLISHED_NR)
		return false;
	/* A socket keeps the cgroup it was created in, so one never tracked
	 * (out of scope) needs no delete: the hook runs for every socket on
	 * the host, and most are not ours. */
	if (!cgroup_in_scope(sk->sk_cgrp_data.cgroup))
		return false;
	if (newstate == TCP_CLOSE) {
		cookie = bpf_get_socket_cookie((void *)sk);
		bpf_map_delete_elem(&scope_conns, &cookie);
		return false;
	}
	conn_key_of(sk, &k);
	cookie = bpf_get_socket_cookie((void *)sk);
	bpf_map_update_elem(&scope_conns, &cookie, &k, BPF_ANY);
	return true;
}

/* tp_btf/inet_sock_set_state: tracks the TCP connections of sockets in
 * scope, and reports inbound ones as they are established, with the
 * ingress verdict that admitted them. */
SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(vigil_sock_state, const struct sock *sk, const int oldstate, const int newstate)
{
	struct ingress_judgement j = {.verdict = VERDICT_ALLOW};
	struct vigil_event *e;
	__u8 peer[16], local[16];
	__u16 lport;

	if (!track_conn(sk, newstate) || oldstate != TCP_SYN_RECV_NR)
		return 0;
	sock_peer(sk, peer, local);
	lport = sk->__sk_common.skc_num;
	judge_ingress(peer, lport, PROTO_TCP, &j);

	e = reserve_event(EVENT_ACCEPT);
	if (!e)
		return 0;
	e->inbound = 1;
	e->cgroup_id = sk->sk_cgrp_data.cgroup->kn->id;
	e->proto = PROTO_TCP;
	e->verdict = j.verdict;
	e->rule_id = j.rule_id;
	e->local_port = lport;
	e->remote_port = bpf_ntohs(sk->__sk_common.skc_dport);
	__builtin_memcpy(e->local_addr, local, 16);
	__builtin_memcpy(e->remote_addr, peer, 16);
	submit_event(e);
	return 0;
}
