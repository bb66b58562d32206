/* SPDX-License-Identifier: (MIT OR GPL-2.0-only) */
/* Counting and event emission shared by every program. */
#ifndef VIGIL_EVENTS_H
#define VIGIL_EVENTS_H

#include "maps.h"

static __always_inline void count(__u32 reason)
{
	__u64 *n = bpf_map_lookup_elem(&counters, &reason);

	if (n)
		*n += 1;
}

/* SHORT_EVENT is the size of a record without the exec filename: every
 * kind but exec is sent short, so connects move less through the ring. */
#define SHORT_EVENT offsetof(struct vigil_event, filename)

static __always_inline struct vigil_event *fill_header(struct vigil_event *e, __u8 kind)
{
	if (!e) {
		count(COUNTER_EVENTS_LOST);
		return NULL;
	}
	e->kind = kind;
	e->time_ns = bpf_ktime_get_boot_ns();
	return e;
}

/* reserve_event takes a zeroed short ring buffer record, or counts a loss
 * and returns NULL when the ring buffer is full. */
static __always_inline struct vigil_event *reserve_event(__u8 kind)
{
	struct vigil_event *e = bpf_ringbuf_reserve(&events, SHORT_EVENT, 0);

	if (e)
		__builtin_memset(e, 0, SHORT_EVENT);
	return fill_header(e, kind);
}

/* reserve_exec_event is reserve_event for a full record, with filename. */
static __always_inline struct vigil_event *reserve_exec_event(void)
{
	struct vigil_event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);

	if (e)
		__builtin_memset(e, 0, sizeof(*e));
	return fill_header(e, EVENT_EXEC);
}

/* WAKEUP_BYTES is how much unread data wakes the reader; below it records
 * are submitted without a wakeup and the reader finds them at its next
 * poll deadline. Waking the reader for every connect costs more than the
 * hooks themselves. */
#define WAKEUP_BYTES (64 * 1024)

static __always_inline void submit_event(struct vigil_event *e)
{
	__u64 avail = bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA);
	__u64 size = bpf_ringbuf_query(&events, BPF_RB_RING_SIZE);
	__u64 mark = size / 4 < WAKEUP_BYTES ? size / 4 : WAKEUP_BYTES;

	bpf_ringbuf_submit(e, avail >= mark ? BPF_RB_FORCE_WAKEUP : BPF_RB_NO_WAKEUP);
	count(COUNTER_EVENTS_EMITTED);
}

/* new_encode_dev turns a kernel dev_t into the st_dev user space sees. */
static __always_inline __u64 encode_dev(dev_t dev)
{
	__u32 major = dev >> 20, minor = dev & 0xfffff;

	return (minor & 0xff) | (major << 8) | ((__u64)(minor & ~0xff) << 12);
}

/* fill_task records who a task is: ids, start times, executable. */
static __always_inline void fill_task(struct vigil_event *e, struct task_struct *t)
{
	struct task_struct *leader = t->group_leader;
	struct task_struct *parent = t->real_parent;
	struct file *exe = t->mm ? t->mm->exe_file : NULL;

	e->pid = t->tgid;
	e->tid = t->pid;
	e->start_ns = leader->start_time;
	e->ppid = parent->tgid;
	e->parent_start_ns = parent->group_leader->start_time;
	e->uid = t->cred->uid.val;
	e->gid = t->cred->gid.val;
	e->cgroup_id = t->cgroups->dfl_cgrp->kn->id;
	if (exe) {
		e->exe_dev = encode_dev(exe->f_inode->i_sb->s_dev);
		e->exe_ino = exe->f_inode->i_ino;
	}
	bpf_probe_read_kernel_str(e->comm, sizeof(e->comm), t->comm);
}

#endif /* VIGIL_EVENTS_H */
