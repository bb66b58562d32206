package dataplane

import (
	"errors"
	"fmt"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Task is one process as the kernel's task walk sees it.
type Task struct {
	PID, PPID   uint32
	StartTimeNs uint64 // task->start_time (CLOCK_MONOTONIC ns); with PID, the identity
	UID, GID    uint32
	CgroupID    uint64
	Exe         ExecIdentity
	Comm        string
	inScope     bool
}

// treeKillTimeout bounds how long Kill with tree waits for every
// descendant to die.
const treeKillTimeout = 5 * time.Second

// StartTime returns the kernel start time of process pid, in nanoseconds
// (task->start_time), read by an iter/task walk; ErrNoProcess if none.
func (d *Dataplane) StartTime(pid uint32) (uint64, error) {
	all, err := d.walkTasks()
	if err != nil {
		return 0, err
	}
	for _, t := range all {
		if t.PID == pid {
			return t.StartTimeNs, nil
		}
	}
	return 0, ErrNoProcess
}

// Tasks lists the processes in scope (thread-group leaders).
func (d *Dataplane) Tasks() ([]Task, error) {
	all, err := d.walkTasks()
	if err != nil {
		return nil, err
	}
	var out []Task
	for _, t := range all {
		if t.inScope {
			out = append(out, t)
		}
	}
	return out, nil
}

// walkTasks runs the iter/task program and decodes its records.
func (d *Dataplane) walkTasks() ([]Task, error) {
	raw, err := runIter(d.objs.VigilTasks)
	if err != nil {
		return nil, fmt.Errorf("run iter/task: %w", err)
	}
	size := int(unsafe.Sizeof(bpfTaskRecord{}))
	if len(raw)%size != 0 {
		return nil, fmt.Errorf("decode iter/task: %d bytes is not a multiple of %d", len(raw), size)
	}
	out := make([]Task, 0, len(raw)/size)
	for off := 0; off < len(raw); off += size {
		r := (*bpfTaskRecord)(unsafe.Pointer(&raw[off]))
		out = append(out, Task{
			PID: r.Pid, PPID: r.Ppid, StartTimeNs: r.StartNs, UID: r.Uid, GID: r.Gid,
			CgroupID: r.CgroupId, Exe: ExecIdentity{Dev: r.ExeDev, Ino: r.ExeIno},
			Comm: cString(r.Comm[:]), inScope: r.InScope != 0,
		})
	}
	return out, nil
}

// Kill sends SIGKILL to the process (pid, startNs) in scope, never to
// another process that reuses the pid: ErrNoProcess if (pid, startNs) is not
// alive in scope. The
// target is also recorded in kill_targets, so it dies at its next exec even
// if the signal were lost. With tree, every descendant dies too, including
// children forked while the kill is in flight; Kill then returns once none
// is left alive.
func (d *Dataplane) Kill(pid uint32, startNs uint64, tree bool) error {
	d.killMu.Lock()
	defer d.killMu.Unlock()

	all, err := d.Tasks()
	if err != nil {
		return err
	}
	if !alive(all, pid, startNs) {
		return ErrNoProcess
	}
	flags := uint32(0)
	if tree {
		flags = killTree
	}
	if err := d.markKill(pid, startNs, flags); err != nil {
		return err
	}
	if !tree {
		return d.signal(pid, startNs)
	}
	return d.killTree(pid, startNs)
}

// killTree marks every descendant of the target before any dies (so none is
// orphaned unmarked), then kills marked processes until none is alive.
func (d *Dataplane) killTree(pid uint32, startNs uint64) error {
	victims := map[uint32]uint64{pid: startNs}
	if err := d.markDescendants(victims); err != nil {
		return err
	}
	deadline := time.Now().Add(treeKillTimeout)
	for time.Now().Before(deadline) {
		all, err := d.Tasks()
		if err != nil {
			return err
		}
		left := d.pendingVictims(all, victims)
		if len(left) == 0 {
			return nil
		}
		if err := d.signalAll(left); err != nil {
			return err
		}
	}
	return fmt.Errorf("kill tree %d: descendants still alive after %s", pid, treeKillTimeout)
}

// signalAll opens a pidfd for each task, checks with one fresh walk that
// each still has its start time, and signals those through their pidfds.
func (d *Dataplane) signalAll(tasks []Task) error {
	fds := make([]int, len(tasks))
	for i, t := range tasks {
		fds[i], _ = unix.PidfdOpen(int(t.PID), 0)
	}
	defer func() {
		for _, fd := range fds {
			if fd >= 0 {
				unix.Close(fd)
			}
		}
	}()
	all, err := d.walkTasks()
	if err != nil {
		return err
	}
	for i, t := range tasks {
		if fds[i] >= 0 && alive(all, t.PID, t.StartTimeNs) {
			_ = unix.PidfdSendSignal(fds[i], unix.SIGKILL, nil, 0)
		}
	}
	return nil
}

// markDescendants adds children of victims to victims and kill_targets
// until a walk finds no new one. The fork hook marks later children.
func (d *Dataplane) markDescendants(victims map[uint32]uint64) error {
	for {
		all, err := d.Tasks()
		if err != nil {
			return err
		}
		added := 0
		for _, t := range all {
			if _, ok := victims[t.PPID]; !ok || victims[t.PID] == t.StartTimeNs {
				continue
			}
			victims[t.PID] = t.StartTimeNs
			if err := d.markKill(t.PID, t.StartTimeNs, killTree); err != nil {
				return err
			}
			added++
		}
		if added == 0 {
			return nil
		}
	}
}

// pendingVictims lists live tasks that are victims or marked in
// kill_targets with a matching start time.
func (d *Dataplane) pendingVictims(all []Task, victims map[uint32]uint64) []Task {
	var left []Task
	for _, t := range all {
		if start, ok := victims[t.PID]; ok && start == t.StartTimeNs {
			left = append(left, t)
			continue
		}
		var k bpfKillTarget
		if d.objs.KillTargets.Lookup(t.PID, &k) == nil && k.StartNs == t.StartTimeNs {
			victims[t.PID] = t.StartTimeNs
			left = append(left, t)
		}
	}
	return left
}

const killTree = 1 // KILL_TREE in bpf/common.h

func (d *Dataplane) markKill(pid uint32, startNs uint64, flags uint32) error {
	if err := d.objs.KillTargets.Put(pid, &bpfKillTarget{StartNs: startNs, Flags: flags}); err != nil {
		return fmt.Errorf("write kill_targets: %w", err)
	}
	return nil
}

func alive(all []Task, pid uint32, startNs uint64) bool {
	for _, t := range all {
		if t.PID == pid && t.StartTimeNs == startNs {
			return true
		}
	}
	return false
}

// signal opens a pidfd for pid, checks through a fresh walk that the
// process behind it still has startNs, and only then sends SIGKILL through
// the pidfd, which cannot reach a process that took the pid later.
func (d *Dataplane) signal(pid uint32, startNs uint64) error {
	fd, err := unix.PidfdOpen(int(pid), 0)
	if errors.Is(err, unix.ESRCH) {
		return ErrNoProcess
	}
	if err != nil {
		return fmt.Errorf("open pidfd %d: %w", pid, err)
	}
	defer unix.Close(fd)

	all, err := d.walkTasks()
	if err != nil {
		return err
	}
	if !alive(all, pid, startNs) {
		return ErrNoProcess
	}
	err = unix.PidfdSendSignal(fd, unix.SIGKILL, nil, 0)
	if errors.Is(err, unix.ESRCH) {
		return ErrNoProcess
	}
	if err != nil {
		return fmt.Errorf("signal %d: %w", pid, err)
	}
	return nil
}

// IdentityOf returns the executable identity of the file at path, encoded
// as the kernel's exec hook reports it (st_dev is new_encode_dev already).
func IdentityOf(path string) (ExecIdentity, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return ExecIdentity{}, fmt.Errorf("stat %s: %w", path, err)
	}
	return ExecIdentity{Dev: st.Dev, Ino: st.Ino}, nil
}

func cString(b []int8) string {
	out := make([]byte, 0, len(b))
	for _, c := range b {
		if c == 0 {
			break
		}
		out = append(out, byte(c))
	}
	return string(out)
}
