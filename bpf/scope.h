/* SPDX-License-Identifier: (MIT OR GPL-2.0-only) */
/* Scope checks and address helpers shared by the hooks. */
#ifndef VIGIL_SCOPE_H
#define VIGIL_SCOPE_H

#include "maps.h"

static __always_inline struct scope_info *scope_get(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&scope, &zero);
}

/* cgroup_in_scope reports whether cg is the scope directory or below it,
 * walking up the cgroup's kernfs nodes (constant offsets only, as BTF
 * pointers require). */
static __always_inline bool cgroup_in_scope(struct cgroup *cg)
{
	struct scope_info *s = scope_get();
	struct kernfs_node *kn;

	if (!s || !cg)
		return false;
	kn = cg->kn;
	for (int i = 0; i <= MAX_CGROUP_DEPTH; i++) {
		if (!kn)
			return false;
		if (kn->id == s->cgroup_id)
			return true;
		kn = kn->__parent;
	}
	return false;
}

static __always_inline bool current_in_scope(void)
{
	return bpf_current_task_under_cgroup(&scope_cgroup, 0) == 1;
}

/* map_v4 writes an IPv4 address (network order) as IPv4-mapped IPv6. */
static __always_inline void map_v4(__u8 addr[16], __u32 ip4)
{
	__builtin_memset(addr, 0, 10);
	addr[10] = 0xff;
	addr[11] = 0xff;
	__builtin_memcpy(addr + 12, &ip4, 4);
}

static __always_inline __u8 proto_of(__u32 ipproto)
{
	if (ipproto == IPPROTO_TCP_NR)
		return PROTO_TCP;
	if (ipproto == IPPROTO_UDP_NR)
		return PROTO_UDP;
	return PROTO_OTHER;
}

static __always_inline bool proto_matches(__u8 rule, __u8 proto)
{
	return rule == PROTO_ANY || rule == proto;
}

/* table_slot returns the active slot, read once per judgement. */
static __always_inline __u32 table_slot(void)
{
	__u32 zero = 0, *slot = bpf_map_lookup_elem(&active_slot, &zero);

	return slot ? (*slot & 1) : 0;
}

/* quarantine_allows reports whether addr is exempt from quarantine. */
static __always_inline bool quarantine_allows(struct table_settings *st, const __u8 addr[16])
{
	__u64 a[2];

	__builtin_memcpy(a, addr, 16);
	for (int i = 0; i < MAX_QUARANTINE_EXEMPT; i++) {
		struct exempt_net *n = &st->exempt[i];

		if (i >= st->exempt_count)
			break;
		if ((a[0] & n->mask[0]) == n->net[0] && (a[1] & n->mask[1]) == n->net[1])
			return true;
	}
	return false;
}

/* pending_key returns the overlay key for addr when an overlay holds
 * entries, else false, so the lookup is skipped while none are pending. */
static __always_inline bool pending_key(const __u8 addr[16], struct prefix_key *key)
{
	struct scope_info *s = scope_get();

	if (!s || !s->pending_entries)
		return false;
	key->prefixlen = 128;
	__builtin_memcpy(key->addr, addr, 16);
	return true;
}

/* peer_is_cut reports whether traffic with addr:port is blocked. */
static __always_inline bool peer_is_cut(const __u8 addr[16], __u16 port)
{
	struct scope_info *s = scope_get();
	struct cut_key k = {};

	if (!s || !s->cut_entries)
		return false;
	__builtin_memcpy(k.addr, addr, 16);
	if (bpf_map_lookup_elem(&cut_peers, &k))
		return true;
	k.port = port;
	return bpf_map_lookup_elem(&cut_peers, &k) != NULL;
}

#endif /* VIGIL_SCOPE_H */
