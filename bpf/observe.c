//go:build ignore
/* SPDX-License-Identifier: (MIT OR GPL-2.0-only) */
/* Process observation and process enforcement: tp_btf sched_process_exec,
 * sched_process_fork and sched_process_exit. These programs are global;
 * each checks first that the task it reports is in scope.
 *
 * Exec also enforces kill-on-exec and pending kills: SIGKILL sent here is
 * delivered before the new image runs a single user instruction. Fork adds
 * the children of a tree kill to kill_targets, so a child forked while the
 * kill is in flight is found by the agent and killed at its first exec. */
#include "common.h"
#include "maps.h"
#include "events.h"
#include "scope.h"

/* kill_pending reports whether the task is a kill target (matching start
 * time), so a reused pid is never hit. */
static __always_inline struct kill_target *kill_pending(struct task_struct *t)
{
	__u32 tgid = t->tgid;
	struct kill_target *k = bpf_map_lookup_elem(&kill_targets, &tgid);

	if (k && k->start_ns == t->group_leader->start_time)
		return k;
	return NULL;
}

static __always_inline bool exec_forbidden(struct linux_binprm *bprm)
{
	struct exe_key key = {
		.dev = encode_dev(bprm->file->f_inode->i_sb->s_dev),
		.ino = bprm->file->f_inode->i_ino,
	};

	return bpf_map_lookup_elem(&kill_on_exec, &key) != NULL;
}

/* tp_btf/sched_process_exec: reports the exec; kills it when the executable
 * is forbidden or the process is a kill target. Return value unused. */
SEC("tp_btf/sched_process_exec")
int BPF_PROG(vigil_exec, struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)
{
	struct vigil_event *e;
	__u8 verdict = VERDICT_ALLOW;

	if (!current_in_scope())
		return 0;
	if (exec_forbidden(bprm)) {
		bpf_send_signal(SIGKILL_NR);
		count(COUNTER_KILL_ON_EXEC);
		verdict = VERDICT_DENY;
	} else if (kill_pending(p)) {
		bpf_send_signal(SIGKILL_NR);
		count(COUNTER_KILL_SIGNAL);
		verdict = VERDICT_DENY;
	}

	e = reserve_exec_event();
	if (!e)
		return 0;
	fill_task(e, p);
	e->verdict = verdict;
	e->exe_dev = encode_dev(bprm->file->f_inode->i_sb->s_dev);
	e->exe_ino = bprm->file->f_inode->i_ino;
	bpf_probe_read_kernel_str(e->filename, sizeof(e->filename), bprm->filename);
	submit_event(e);
	return 0;
}

/* follow_kill adds a new child of a tree-kill target to kill_targets. The
 * parent is not signalled here: the agent first marks the whole tree, so no
 * member dies (orphaning its children) before all are marked. */
static __always_inline void follow_kill(struct task_struct *parent, struct task_struct *child)
{
	struct kill_target *k = kill_pending(parent);
	struct kill_target ck = {};
	__u32 tgid = child->tgid;

	if (!k || !(k->flags & KILL_TREE))
		return;
	ck.start_ns = child->group_leader->start_time;
	ck.flags = KILL_TREE;
	bpf_map_update_elem(&kill_targets, &tgid, &ck, BPF_ANY);
}

/* tp_btf/sched_process_fork: reports a new process (not a new thread) whose
 * cgroup is in scope (a child cloned into the scope from outside counts),
 * and follows tree kills. Return value unused. */
SEC("tp_btf/sched_process_fork")
int BPF_PROG(vigil_fork, struct task_struct *parent, struct task_struct *child)
{
	struct vigil_event *e;

	if (child->pid != child->tgid || !cgroup_in_scope(child->cgroups->dfl_cgrp))
		return 0;
	follow_kill(parent->group_leader, child);

	e = reserve_event(EVENT_FORK);
	if (!e)
		return 0;
	fill_task(e, parent);
	e->child_pid = child->tgid;
	e->child_start_ns = child->start_time;
	submit_event(e);
	return 0;
}

/* tp_btf/sched_process_exit: reports the end of a process (its last thread)
 * and forgets it as a kill target. Return value unused. */
SEC("tp_btf/sched_process_exit")
int BPF_PROG(vigil_exit, struct task_struct *p, bool group_dead)
{
	struct vigil_event *e;
	__u32 tgid = p->tgid;
	int code;

	if (!group_dead || !current_in_scope())
		return 0;
	bpf_map_delete_elem(&kill_targets, &tgid);

	e = reserve_event(EVENT_EXIT);
	if (!e)
		return 0;
	fill_task(e, p);
	code = p->signal->group_exit_code ? p->signal->group_exit_code : p->exit_code;
	e->exit_code = (code >> 8) & 0xff;
	e->signal = code & 0x7f;
	submit_event(e);
	return 0;
}
