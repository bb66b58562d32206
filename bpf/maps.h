/* SPDX-License-Identifier: (MIT OR GPL-2.0-only) */
/* Every map of the Vigil data plane. All are pinned by name under the
 * scope's pin directory, so a restarted agent adopts them.
 *
 * Tables are double-buffered: the agent fills the inner maps of the slot
 * that is not active, then flips active_slot with one write, so a program
 * judges a connection against one complete table generation.
 *
 * Flipping the slot waits for an RCU grace period, so a new table takes
 * tens of milliseconds to go live. The denies it adds reach the programs
 * first through the pending overlays, one element write each: a connect is
 * judged by the old table plus some of the new table's denies, or by the
 * new table, never by anything else. */
#ifndef VIGIL_MAPS_H
#define VIGIL_MAPS_H

#include "common.h"

#define TABLE_SLOTS		2
#define MAX_PREFIXES		(256 * 1024)
#define MAX_RULE_SLOTS		(512 * 1024)
#define MAX_PENDING_PREFIXES	256
#define MAX_CUT_PEERS		4096
#define MAX_TRACKED_CONNS	65536
#define MAX_KILL_TARGETS	8192
#define MAX_KILL_ON_EXEC	4096
#define DEFAULT_RINGBUF_BYTES	(8 * 1024 * 1024)

/* events: every observation, to the agent. Writers: all programs. Reader:
 * the agent. When full, the record is dropped and COUNTER_EVENTS_LOST
 * rises. Size set by the agent at load (Config.RingBufferBytes). */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, DEFAULT_RINGBUF_BYTES);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} events SEC(".maps");

/* counters: what the programs did, by reason. enum vigil_counter -> count,
 * per CPU. Writers: all programs. Reader: the agent (sums CPUs). Fixed
 * size, never full. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, COUNTER_MAX);
	__type(key, __u32);	/* enum vigil_counter */
	__type(value, __u64);	/* count */
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} counters SEC(".maps");

/* scope_cgroup: the scope directory, for bpf_current_task_under_cgroup in
 * the global tp_btf programs. 0 -> cgroup fd. Writer: the agent at load. */
struct {
	__uint(type, BPF_MAP_TYPE_CGROUP_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);	/* cgroup directory fd */
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} scope_cgroup SEC(".maps");

/* scope: the scope's id and depth for sockets and iterated tasks, and the
 * number of cut entries. 0 -> struct scope_info. Writer: the agent. Readers:
 * iterators, inet_sock_set_state, packet and socket hooks. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct scope_info);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} scope SEC(".maps");

/* active_slot: which table slot programs read. 0 -> slot (0 or 1). Writer:
 * the agent, last step of ApplyTable. Readers: egress and ingress hooks. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);	/* slot */
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} active_slot SEC(".maps");

/* settings: the scalar part of each table slot. slot -> struct
 * table_settings. Writer: the agent (inactive slot only). Readers: egress
 * and ingress hooks. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, TABLE_SLOTS);
	__type(key, __u32);	/* slot */
	__type(value, struct table_settings);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} settings SEC(".maps");

/* Inner prefix trie of one slot: destination (egress) or peer (ingress)
 * prefix -> span of rules. Created per ApplyTable by the agent; a table
 * with more prefixes is refused before anything is swapped. */
struct prefix_trie {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, MAX_PREFIXES);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct prefix_key);
	__type(value, struct rule_span);
};

/* Inner rule arrays of one slot: index -> compiled rule. Sized per table by
 * the agent (BPF_F_INNER_MAP lets the size differ from this template). */
struct egress_rule_array {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__uint(map_flags, BPF_F_INNER_MAP);
	__type(key, __u32);
	__type(value, struct egress_rule);
};

struct ingress_rule_array {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__uint(map_flags, BPF_F_INNER_MAP);
	__type(key, __u32);
	__type(value, struct ingress_rule);
};

/* egress_prefixes: slot -> prefix trie of outbound destinations. Writer:
 * the agent. Readers: connect4/6, sendmsg4/6. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, TABLE_SLOTS);
	__type(key, __u32);	/* slot */
	__uint(pinning, LIBBPF_PIN_BY_NAME);
	__array(values, struct prefix_trie);
} egress_prefixes SEC(".maps");

/* egress_rules: slot -> array of compiled outbound rules, index -> struct
 * egress_rule, sized per table. Writer: the agent.
 * Readers: connect4/6, sendmsg4/6. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, TABLE_SLOTS);
	__type(key, __u32);	/* slot */
	__uint(pinning, LIBBPF_PIN_BY_NAME);
	__array(values, struct egress_rule_array);
} egress_rules SEC(".maps");

/* ingress_prefixes: slot -> prefix trie of admitted peers. Writer: the
 * agent. Readers: cgroup_skb/ingress, inet_sock_set_state. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, TABLE_SLOTS);
	__type(key, __u32);	/* slot */
	__uint(pinning, LIBBPF_PIN_BY_NAME);
	__array(values, struct prefix_trie);
} ingress_prefixes SEC(".maps");

/* ingress_rules: slot -> array of compiled inbound rules, index -> struct
 * ingress_rule, sized per table. Writer: the agent. Readers: as above. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, TABLE_SLOTS);
	__type(key, __u32);	/* slot */
	__uint(pinning, LIBBPF_PIN_BY_NAME);
	__array(values, struct ingress_rule_array);
} ingress_rules SEC(".maps");

/* egress_pending: the egress pending-deny overlay. Destination prefix ->
 * struct pending_egress: denies of the table being applied that no earlier
 * rule of that table overrides, so each denies only what the new table
 * denies. Writer: the agent, before it flips active_slot; it empties the
 * map once the new table is live. Readers: connect4/6, sendmsg4/6, before
 * the table. The agent never writes more than MAX_PENDING_PREFIXES; denies
 * beyond that wait for the flip. */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, MAX_PENDING_PREFIXES);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct prefix_key);
	__type(value, struct pending_egress);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} egress_pending SEC(".maps");

/* ingress_pending: the ingress pending-deny overlay, as egress_pending, by
 * peer prefix; each deny lies inside a port range the new table protects.
 * Writer: the agent. Readers: cgroup_skb/ingress, inet_sock_set_state. */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, MAX_PENDING_PREFIXES);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct prefix_key);
	__type(value, struct pending_ingress);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} ingress_pending SEC(".maps");

/* cut_peers: blocked peers. struct cut_key -> origin (CUT_BY_*). Writer:
 * the agent (Cut, Restore, ApplyTable). Readers: the socket and packet
 * hooks and iter/tcp. When full, Cut returns an error. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_CUT_PEERS);
	__type(key, struct cut_key);
	__type(value, __u8);	/* CUT_BY_* */
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} cut_peers SEC(".maps");

/* scope_conns: the established TCP connections of sockets in scope, so a
 * cut resets them by their exact addresses before the iter/tcp walk of
 * every socket. Socket cookie -> struct conn_key (keyed by cookie because
 * a closing socket has already lost its local port). Writer:
 * inet_sock_set_state (added at ESTABLISHED, removed at CLOSE). Reader:
 * the agent (Cut). When full, new connections are left out and only the
 * walk resets them. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_TRACKED_CONNS);
	__type(key, __u64);	/* socket cookie */
	__type(value, struct conn_key);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} scope_conns SEC(".maps");

/* kill_targets: processes to kill at their next exec or fork, and whose
 * children to add when KILL_TREE is set. tgid -> struct kill_target.
 * Writers: the agent (Kill), sched_process_fork (children of a tree kill).
 * Readers: exec and fork hooks, the agent. Entries leave at process exit.
 * When full, children are still killed by the agent's walk. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_KILL_TARGETS);
	__type(key, __u32);	/* tgid */
	__type(value, struct kill_target);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} kill_targets SEC(".maps");

/* kill_on_exec: executables whose exec is answered with SIGKILL. struct
 * exe_key -> 1. Writer: the agent (ApplyTable). Reader: sched_process_exec.
 * When full, ApplyTable returns an error. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_KILL_ON_EXEC);
	__type(key, struct exe_key);
	__type(value, __u8);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} kill_on_exec SEC(".maps");

#endif /* VIGIL_MAPS_H */
