//go:build ignore
/* SPDX-License-Identifier: (MIT OR GPL-2.0-only) */
/* Task walk: iter/task writes one struct task_record per live process
 * (thread group leader, not a zombie) on the host, marking those in scope. The agent reads it for
 * start times (task->start_time, nanoseconds) and for processes that started
 * before it. */
#include "common.h"
#include "maps.h"
#include "events.h"
#include "scope.h"

/* iter/task: output is a stream of struct task_record. */
SEC("iter/task")
int vigil_tasks(struct bpf_iter__task *ctx)
{
	struct task_struct *t = ctx->task;
	struct task_record r = {};
	struct file *exe;
	struct cgroup *cg;

	if (!t || t->pid != t->tgid || t->exit_state)
		return 0;	/* threads, zombies and dead tasks */
	cg = t->cgroups->dfl_cgrp;
	exe = t->mm ? t->mm->exe_file : NULL;
	r.pid = t->tgid;
	r.ppid = t->real_parent->tgid;
	r.start_ns = t->start_time;
	r.uid = t->cred->uid.val;
	r.gid = t->cred->gid.val;
	r.cgroup_id = cg->kn->id;
	r.in_scope = cgroup_in_scope(cg);
	if (exe) {
		r.exe_dev = encode_dev(exe->f_inode->i_sb->s_dev);
		r.exe_ino = exe->f_inode->i_ino;
	}
	bpf_probe_read_kernel_str(r.comm, sizeof(r.comm), t->comm);
	bpf_seq_write(ctx->meta->seq, &r, sizeof(r));
	return 0;
}
