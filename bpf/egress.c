//go:build ignore
/* SPDX-License-Identifier: (MIT OR GPL-2.0-only) */
/* Outbound enforcement: cgroup connect4/6 and sendmsg4/6 at the scope.
 *
 * A socket is judged by the cgroup it was created in (the kernel runs these
 * hooks for the socket's cgroup), not by the caller's current cgroup. A TCP
 * connect to ::ffff:a.b.c.d runs only connect6 and a UDP sendto to it runs
 * only sendmsg4; both reach the same IPv4-mapped trie keys. */
#include "common.h"
#include "maps.h"
#include "events.h"
#include "scope.h"

struct judgement {
	__u32 rule_id;
	__u32 reason;	/* enum vigil_counter */
	__u8 verdict;	/* enum vigil_verdict */
};

/* subject_cache holds the caller's identity, read once per connect. */
struct subject_cache {
	struct exe_key exe;
	__u32 uid;
	bool exe_loaded;
};

static __always_inline void load_exe(struct subject_cache *c)
{
	struct task_struct *t = bpf_get_current_task_btf();
	struct file *exe = t->mm ? t->mm->exe_file : NULL;

	c->exe_loaded = true;
	if (!exe)
		return;
	c->exe.dev = encode_dev(exe->f_inode->i_sb->s_dev);
	c->exe.ino = exe->f_inode->i_ino;
}

/* in_cgroup reports whether the calling task is in cgroup id or below it. */
static __always_inline bool in_cgroup(__u64 id)
{
	for (int level = 0; level < MAX_CGROUP_DEPTH; level++) {
		__u64 anc = bpf_get_current_ancestor_cgroup_id(level);

		if (!anc)
			return false;
		if (anc == id)
			return true;
	}
	return false;
}

static __always_inline bool subject_matches(const struct egress_rule *r, struct subject_cache *c)
{
	if ((r->match & MATCH_UID) && r->uid != c->uid)
		return false;
	if (r->match & MATCH_EXE) {
		if (!c->exe_loaded)
			load_exe(c);
		if (r->exe_dev != c->exe.dev || r->exe_ino != c->exe.ino)
			return false;
	}
	if ((r->match & MATCH_CGROUP) && !in_cgroup(r->cgroup_id))
		return false;
	return true;
}

static __always_inline void judge_default(struct table_settings *st, struct judgement *j)
{
	j->verdict = st->default_egress ? st->default_egress : VERDICT_ALLOW;
	j->rule_id = 0;
	if (j->verdict == VERDICT_DENY)
		j->reason = COUNTER_EGRESS_DENY_DEFAULT;
	else if (j->verdict == VERDICT_AUDIT)
		j->reason = COUNTER_EGRESS_AUDIT_DEFAULT;
	else
		j->reason = COUNTER_EGRESS_ALLOW_DEFAULT;
}

static __always_inline void judge_rule(const struct egress_rule *r, struct judgement *j)
{
	j->verdict = r->verdict;
	j->rule_id = r->rule_id;
	if (r->verdict == VERDICT_DENY)
		j->reason = COUNTER_EGRESS_DENY_RULE;
	else if (r->verdict == VERDICT_AUDIT)
		j->reason = COUNTER_EGRESS_AUDIT_RULE;
	else
		j->reason = COUNTER_EGRESS_ALLOW_RULE;
}

/* rule_walk is the state of one bpf_loop over a prefix's rule span. */
struct rule_walk {
	struct subject_cache c;
	__u32 slot;
	__u32 first;
	__u32 rule_id;	/* out: the matching rule */
	__u16 port;
	__u8 proto;
	__u8 verdict;	/* out: VERDICT_NONE while no rule matched */
};

/* rule_step tests rule i of the span; 1 stops the loop. A callback, so the
 * verifier checks it once rather than once per iteration. */
static long rule_step(__u32 i, void *data)
{
	struct rule_walk *w = data;
	struct egress_rule *r;
	__u32 idx = w->first + i;
	void *rules;

	rules = bpf_map_lookup_elem(&egress_rules, &w->slot);
	if (!rules)
		return 1;
	r = bpf_map_lookup_elem(rules, &idx);
	if (!r)
		return 1;
	if (w->port < r->port_min || w->port > r->port_max || !proto_matches(r->proto, w->proto))
		return 0;
	if (!subject_matches(r, &w->c))
		return 0;
	w->rule_id = r->rule_id;
	w->verdict = r->verdict;
	return 1;
}

/* judge_table finds the first rule of the longest matching prefix span that
 * admits port, proto and the caller; no match leaves the default. */
static __always_inline void judge_table(__u32 slot, const __u8 addr[16], __u16 port, __u8 proto,
					struct judgement *j)
{
	struct rule_walk w = {.slot = slot, .port = port, .proto = proto};
	struct prefix_key key = {.prefixlen = 128};
	struct rule_span *span;
	struct egress_rule r;
	void *trie;

	trie = bpf_map_lookup_elem(&egress_prefixes, &slot);
	if (!trie)
		return;
	__builtin_memcpy(key.addr, addr, 16);
	span = bpf_map_lookup_elem(trie, &key);
	if (!span)
		return;

	w.first = span->first;
	w.c.uid = (__u32)bpf_get_current_uid_gid();
	bpf_loop(span->count < MAX_RULES_PER_PREFIX ? span->count : MAX_RULES_PER_PREFIX, rule_step,
		 &w, 0);
	if (w.verdict == VERDICT_NONE)
		return;
	r.rule_id = w.rule_id;
	r.verdict = w.verdict;
	judge_rule(&r, j);
}

/* judge_pending_dest applies the pending-deny overlay: the first pending deny
 * that admits port, proto and the caller decides. */
static __always_inline bool judge_pending_dest(const __u8 addr[16], __u16 port, __u8 proto,
					  struct judgement *j)
{
	struct subject_cache c = {};
	struct pending_egress *p;
	struct prefix_key key;

	if (!pending_key(addr, &key))
		return false;
	p = bpf_map_lookup_elem(&egress_pending, &key);
	if (!p)
		return false;

	c.uid = (__u32)bpf_get_current_uid_gid();
	for (__u32 i = 0; i < MAX_PENDING_RULES; i++) {
		struct egress_rule *r = &p->rules[i];

		if (i >= p->count)
			break;
		if (port < r->port_min || port > r->port_max || !proto_matches(r->proto, proto))
			continue;
		if (!subject_matches(r, &c))
			continue;
		judge_rule(r, j);
		return true;
	}
	return false;
}

static __always_inline void judge(const __u8 addr[16], __u16 port, __u8 proto, struct judgement *j)
{
	__u32 slot = table_slot();
	struct table_settings *st = bpf_map_lookup_elem(&settings, &slot);

	if (!st) {
		j->verdict = VERDICT_ALLOW;
		j->reason = COUNTER_EGRESS_ALLOW_DEFAULT;
		return;
	}
	if (peer_is_cut(addr, port)) {
		j->verdict = VERDICT_DENY;
		j->reason = COUNTER_EGRESS_DENY_CUT;
		return;
	}
	if (st->quarantined && !quarantine_allows(st, addr)) {
		j->verdict = VERDICT_DENY;
		j->reason = COUNTER_EGRESS_DENY_QUARANTINE;
		return;
	}
	if (judge_pending_dest(addr, port, proto, j))
		return;
	judge_default(st, j);
	judge_table(slot, addr, port, proto, j);
}

static __always_inline void report(const __u8 addr[16], __u16 port, __u8 proto,
				   const struct judgement *j)
{
	struct task_struct *t = bpf_get_current_task_btf();
	struct vigil_event *e = reserve_event(EVENT_CONNECT);
	__u64 id = bpf_get_current_pid_tgid();
	__u64 ug = bpf_get_current_uid_gid();

	if (!e)
		return;
	e->pid = id >> 32;
	e->tid = (__u32)id;
	e->uid = (__u32)ug;
	e->gid = ug >> 32;
	e->start_ns = t->group_leader->start_time;
	e->cgroup_id = bpf_get_current_cgroup_id();
	bpf_get_current_comm(e->comm, sizeof(e->comm));
	e->proto = proto;
	e->verdict = j->verdict;
	e->rule_id = j->rule_id;
	e->remote_port = port;
	__builtin_memcpy(e->remote_addr, addr, 16);
	submit_event(e);
}

/* enforce judges one destination and returns the hook's answer: 1 lets the
 * call proceed, 0 fails it with EPERM. */
/* loopback_for_unspecified rewrites an unspecified destination (0.0.0.0,
 * ::ffff:0.0.0.0 or ::) into the loopback address the kernel connects it to,
 * so a rule on 127.0.0.0/8 or ::1 cannot be walked around by naming "any". */
static __always_inline void loopback_for_unspecified(__u8 addr[16])
{
	__u64 *half = (__u64 *)addr;
	__u32 *quad = (__u32 *)addr;

	if (half[0] != 0)
		return;
	if (half[1] == 0) {
		addr[15] = 1; /* :: -> ::1 */
		return;
	}
	if (quad[2] == bpf_htonl(0xffff) && quad[3] == 0)
		quad[3] = bpf_htonl(0x7f000001); /* 0.0.0.0 -> 127.0.0.1 */
}

static __always_inline int enforce(__u8 addr[16], __u16 port, __u8 proto)
{
	struct judgement j = {};

	loopback_for_unspecified(addr);
	judge(addr, port, proto, &j);
	count(j.reason);
	report(addr, port, proto, &j);
	return j.verdict == VERDICT_DENY ? 0 : 1;
}

static __always_inline int enforce4(struct bpf_sock_addr *ctx)
{
	__u8 addr[16];

	map_v4(addr, ctx->user_ip4);
	return enforce(addr, bpf_ntohs((__u16)ctx->user_port), proto_of(ctx->protocol));
}

static __always_inline int enforce6(struct bpf_sock_addr *ctx)
{
	__u32 ip6[4];
	__u8 addr[16];

	ip6[0] = ctx->user_ip6[0];
	ip6[1] = ctx->user_ip6[1];
	ip6[2] = ctx->user_ip6[2];
	ip6[3] = ctx->user_ip6[3];
	__builtin_memcpy(addr, ip6, 16);
	return enforce(addr, bpf_ntohs((__u16)ctx->user_port), proto_of(ctx->protocol));
}

/* cgroup/connect4: IPv4 connect (TCP, UDP, fast open); 0 refuses with EPERM. */
SEC("cgroup/connect4")
int vigil_connect4(struct bpf_sock_addr *ctx)
{
	return enforce4(ctx);
}

/* cgroup/connect6: IPv6 and IPv4-mapped connect; 0 refuses with EPERM. */
SEC("cgroup/connect6")
int vigil_connect6(struct bpf_sock_addr *ctx)
{
	return enforce6(ctx);
}

/* cgroup/sendmsg4: UDP send to an IPv4 address; 0 refuses with EPERM. */
SEC("cgroup/sendmsg4")
int vigil_sendmsg4(struct bpf_sock_addr *ctx)
{
	return enforce4(ctx);
}

/* cgroup/sendmsg6: UDP send to an IPv6 address; 0 refuses with EPERM. */
SEC("cgroup/sendmsg6")
int vigil_sendmsg6(struct bpf_sock_addr *ctx)
{
	return enforce6(ctx);
}
