/* SPDX-License-Identifier: (MIT OR GPL-2.0-only) */
/* Types, constants and helpers shared by every Vigil BPF program. The enums
 * and structs here are exported to Go by bpf2go (-type), so the Go layouts
 * come from this file. */
#ifndef VIGIL_COMMON_H
#define VIGIL_COMMON_H

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_tracing.h>

#define AF_INET		2
#define AF_INET6	10
#define IPPROTO_TCP_NR	6
#define IPPROTO_UDP_NR	17
#define SIGKILL_NR	9
#define TCP_ESTABLISHED_NR 1
#define TCP_SYN_RECV_NR	3

#define MAX_CGROUP_DEPTH	16	/* ancestor levels scope and cgroup checks walk */
#define MAX_RULES_PER_PREFIX	32	/* rules one prefix (with its covering prefixes) may hold */
#define MAX_PROTECTED_RANGES	16	/* protected local port ranges per table */
#define MAX_QUARANTINE_EXEMPT	8	/* prefixes reachable while quarantined */
#define MAX_PENDING_RULES	8	/* denies one pending prefix holds, covering ones included */
#define FILENAME_LEN		256
#define COMM_LEN		16

/* Verdicts; numbering shared with Go's dataplane.Verdict. */
enum vigil_verdict {
	VERDICT_NONE = 0,
	VERDICT_ALLOW = 1,
	VERDICT_DENY = 2,
	VERDICT_AUDIT = 3,
};

/* Transports; numbering shared with Go's dataplane.Protocol. */
enum vigil_proto {
	PROTO_OTHER = 0,
	PROTO_ANY = 1,
	PROTO_TCP = 2,
	PROTO_UDP = 3,
};

/* Event kinds; numbering shared with Go's dataplane.EventKind. */
enum vigil_event_kind {
	EVENT_EXEC = 1,
	EVENT_FORK = 2,
	EVENT_EXIT = 3,
	EVENT_CONNECT = 4,
	EVENT_ACCEPT = 5,
};

/* Counter slots of the counters map: what the kernel side did, by reason. */
enum vigil_counter {
	COUNTER_EVENTS_EMITTED = 0,
	COUNTER_EVENTS_LOST,
	COUNTER_EGRESS_ALLOW_RULE,
	COUNTER_EGRESS_ALLOW_DEFAULT,
	COUNTER_EGRESS_DENY_RULE,
	COUNTER_EGRESS_DENY_DEFAULT,
	COUNTER_EGRESS_AUDIT_RULE,
	COUNTER_EGRESS_AUDIT_DEFAULT,
	COUNTER_EGRESS_DENY_CUT,
	COUNTER_EGRESS_DENY_QUARANTINE,
	COUNTER_INGRESS_ALLOW_RULE,
	COUNTER_INGRESS_ALLOW_DEFAULT,
	COUNTER_INGRESS_DENY_RULE,
	COUNTER_INGRESS_DENY_DEFAULT,
	COUNTER_INGRESS_AUDIT,
	COUNTER_PACKET_DROP_CUT,
	COUNTER_PACKET_DROP_QUARANTINE,
	COUNTER_KILL_ON_EXEC,
	COUNTER_KILL_SIGNAL,
	COUNTER_SOCK_DESTROYED,
	COUNTER_MAX,
};

/* Match flags of an egress rule's subject. */
#define MATCH_UID	(1 << 0)
#define MATCH_EXE	(1 << 1)
#define MATCH_CGROUP	(1 << 2)

/* Flags of a kill target. */
#define KILL_TREE	(1 << 0)

/* Origin of a cut entry: an explicit Cut, or the applied table. */
#define CUT_BY_CALL	1
#define CUT_BY_TABLE	2

/* vigil_event is one ring buffer record. Addresses are 16 bytes, IPv4 as
 * IPv4-mapped IPv6 (::ffff:a.b.c.d); ports in host order. */
struct vigil_event {
	__u64 time_ns;		/* bpf_ktime_get_boot_ns */
	__u64 start_ns;		/* task->group_leader->start_time */
	__u64 parent_start_ns;
	__u64 cgroup_id;
	__u64 exe_dev;		/* new_encode_dev of the executable's st_dev */
	__u64 exe_ino;
	__u64 child_start_ns;
	__u32 pid;		/* tgid */
	__u32 tid;
	__u32 ppid;
	__u32 uid;
	__u32 gid;
	__s32 exit_code;
	__u32 signal;
	__u32 child_pid;
	__u32 rule_id;
	__u16 local_port;
	__u16 remote_port;
	__u8 kind;		/* enum vigil_event_kind */
	__u8 proto;		/* enum vigil_proto */
	__u8 verdict;		/* enum vigil_verdict */
	__u8 inbound;
	__u8 local_addr[16];
	__u8 remote_addr[16];
	char comm[COMM_LEN];
	char filename[FILENAME_LEN];
};

/* prefix_key is the key of the prefix tries: IPv6, or IPv4 as IPv4-mapped
 * IPv6 with 96 added to the prefix length, so one trie answers both. */
struct prefix_key {
	__u32 prefixlen;
	__u8 addr[16];
};

/* rule_span locates the rules of one prefix in the rules array: the rules
 * written for it, followed by those of every shorter prefix covering it. */
struct rule_span {
	__u32 first;
	__u32 count;
};

/* egress_rule is one compiled outbound rule. */
struct egress_rule {
	__u64 cgroup_id;	/* MATCH_CGROUP: the caller is in it or below */
	__u64 exe_dev;		/* MATCH_EXE: executable identity */
	__u64 exe_ino;
	__u32 rule_id;
	__u32 uid;		/* MATCH_UID: real uid */
	__u16 port_min;		/* destination ports, inclusive, host order */
	__u16 port_max;
	__u8 proto;		/* enum vigil_proto */
	__u8 verdict;		/* enum vigil_verdict */
	__u8 match;		/* MATCH_* */
	__u8 pad;
};

/* ingress_rule is one compiled inbound rule, found by peer prefix. */
struct ingress_rule {
	__u32 rule_id;
	__u16 port_min;		/* local ports, inclusive, host order */
	__u16 port_max;
	__u8 proto;
	__u8 verdict;
	__u8 pad[2];
};

/* pending_egress holds the pending denies that cover one destination
 * prefix: its own, then those of shorter pending prefixes covering it, so
 * the longest-prefix match alone finds every candidate. */
struct pending_egress {
	__u32 count;		/* rules in use */
	__u32 pad;
	struct egress_rule rules[MAX_PENDING_RULES];
};

/* pending_ingress is pending_egress for inbound rules, by peer prefix. */
struct pending_ingress {
	__u32 count;
	__u32 pad;
	struct ingress_rule rules[MAX_PENDING_RULES];
};

/* port_range is a protected local port range and its default verdict. */
struct port_range {
	__u16 min;
	__u16 max;
	__u8 proto;
	__u8 default_verdict;
	__u8 pad[2];
};

/* exempt_net is a quarantine exemption as network and mask, both in the
 * byte order of the address, read as two 64-bit words. */
struct exempt_net {
	__u64 net[2];
	__u64 mask[2];
};

/* table_settings holds the scalar part of one table generation. */
struct table_settings {
	__u32 generation;	/* increases with every ApplyTable */
	__u8 default_egress;	/* enum vigil_verdict */
	__u8 quarantined;
	__u8 exempt_count;
	__u8 protected_count;
	struct exempt_net exempt[MAX_QUARANTINE_EXEMPT];
	struct port_range protected[MAX_PROTECTED_RANGES];
};

/* scope_info names the scope cgroup for checks on sockets and tasks that are
 * not the current task. */
struct scope_info {
	__u64 cgroup_id;	/* kernfs id of the scope directory */
	__u32 cut_entries;	/* entries in cut_peers; 0 skips the lookups */
	__u32 pending_entries;	/* entries in the pending-deny overlays; 0 skips them */
};

/* cut_key names a cut peer: address (IPv4-mapped for IPv4) and remote port,
 * 0 for every port. */
struct cut_key {
	__u8 addr[16];
	__u16 port;
	__u16 pad;
};

/* conn_key names one TCP connection of a socket in scope, as netlink
 * SOCK_DESTROY looks it up: addresses (IPv4-mapped for AF_INET sockets)
 * and ports in host order. */
struct conn_key {
	__u8 local[16];
	__u8 remote[16];
	__u16 local_port;
	__u16 remote_port;
	__u16 family;		/* AF_INET or AF_INET6: the socket's family */
	__u16 pad;
};

/* kill_target is a process to kill, by its start time. */
struct kill_target {
	__u64 start_ns;		/* task->start_time of the thread-group leader */
	__u32 flags;		/* KILL_* */
	__u32 pad;
};

/* exe_key is an executable identity. */
struct exe_key {
	__u64 dev;		/* new_encode_dev */
	__u64 ino;
};

/* task_record is one line of the task iterator's output. */
struct task_record {
	__u64 start_ns;
	__u64 cgroup_id;
	__u64 exe_dev;
	__u64 exe_ino;
	__u32 pid;
	__u32 ppid;
	__u32 uid;
	__u32 gid;
	__u32 in_scope;
	char comm[COMM_LEN];
	__u32 pad;
};

#endif /* VIGIL_COMMON_H */
