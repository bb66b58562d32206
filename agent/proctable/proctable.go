// Package proctable keeps the agent's view of the processes in its scope and
// turns kernel events into protocol events with the process filled in:
// executable path and SHA-256, arguments, user name, parent and container id.
//
// The agent's event loop owns one Table: it seeds it at start from the
// kernel's task list and /proc, then feeds it every decoded kernel event. The
// Table reads /proc and hashes executables; it holds no file descriptors
// between calls.
package proctable

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/user"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/vigilsec/vigil/agent/dataplane"
	vigilpb "github.com/vigilsec/vigil/gen/vigil/v1"
	"golang.org/x/sys/unix"
)

// Task is a process as the kernel's task walk reports it.
type Task = dataplane.Task

// Process is what the table knows about one process. Values returned by the
// Table are copies; callers may keep them.
type Process struct {
	Task
	Path        string   // absolute executable path
	SHA256      string   // lowercase hex SHA-256 of the executable, "" if unknown
	Args        []string // command line
	User        string   // user name of UID, "" if unknown
	ContainerID string   // container id from the cgroup path, "" if none
}

// Table maps live processes to their identity. It is safe for concurrent use.
type Table struct {
	procRoot   string
	bootOffset int64 // unix ns minus boot-time ns; read-only after New

	mu     sync.Mutex
	procs  map[uint32]*Process                        // by pid; guarded by mu
	hashes map[fileKey]string                         // executable hash cache; guarded by mu
	byHash map[string]map[dataplane.ExecIdentity]bool // sha256 -> identities seen; guarded by mu
	users  map[uint32]string                          // uid -> name; guarded by mu
}

// fileKey identifies a version of a file: a hash is reused only while the
// device, inode, size and modification time all stay the same.
type fileKey struct {
	id    dataplane.ExecIdentity
	size  int64
	mtime int64
}

// New returns an empty table reading process details from procRoot
// (normally "/proc").
func New(procRoot string) *Table {
	return &Table{
		procRoot:   procRoot,
		bootOffset: bootOffset(),
		procs:      make(map[uint32]*Process),
		hashes:     make(map[fileKey]string),
		byHash:     make(map[string]map[dataplane.ExecIdentity]bool),
		users:      make(map[uint32]string),
	}
}

// Seed fills the table with the processes that existed before the agent:
// tasks from the kernel's task walk (which carry exact start times), then any
// other process found in /proc (start time 0: resolved when needed).
func (t *Table) Seed(tasks []Task) {
	seen := make(map[uint32]bool, len(tasks))
	for _, task := range tasks {
		seen[task.PID] = true
		t.put(t.describe(task))
	}

	entries, _ := os.ReadDir(t.procRoot)
	for _, e := range entries {
		pid, err := strconv.ParseUint(e.Name(), 10, 32)
		if err != nil || seen[uint32(pid)] {
			continue
		}
		if task, ok := t.taskFromProc(uint32(pid)); ok {
			t.put(t.describe(task))
		}
	}
}

// Lookup returns the process with pid, if known.
func (t *Table) Lookup(pid uint32) (Process, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()

	p, ok := t.procs[pid]
	if !ok {
		return Process{}, false
	}
	return *p, true
}

// Len returns the number of processes known.
func (t *Table) Len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.procs)
}

// Prune forgets processes that no longer exist in /proc: their exit event
// was lost (ring buffer full) or never came. It returns how many it removed.
func (t *Table) Prune() int {
	t.mu.Lock()
	pids := make([]uint32, 0, len(t.procs))
	for pid := range t.procs {
		pids = append(pids, pid)
	}
	t.mu.Unlock()

	var gone []uint32
	for _, pid := range pids {
		dir := filepath.Join(t.procRoot, strconv.FormatUint(uint64(pid), 10))
		if _, err := os.Stat(dir); os.IsNotExist(err) {
			gone = append(gone, pid)
		}
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, pid := range gone {
		delete(t.procs, pid)
	}
	return len(gone)
}

// Ancestors returns the parent chain of pid, nearest first, as far as the
// table knows it (at most 64 levels).
func (t *Table) Ancestors(pid uint32) []Process {
	t.mu.Lock()
	defer t.mu.Unlock()

	var chain []Process
	p, ok := t.procs[pid]
	for ok && len(chain) < 64 && p.PPID != 0 && p.PPID != p.PID {
		p, ok = t.procs[p.PPID]
		if ok {
			chain = append(chain, *p)
		}
	}
	return chain
}

// Identities returns the executable identities seen with the given hash.
func (t *Table) Identities(sha string) []dataplane.ExecIdentity {
	t.mu.Lock()
	defer t.mu.Unlock()

	var ids []dataplane.ExecIdentity
	for id := range t.byHash[strings.ToLower(sha)] {
		ids = append(ids, id)
	}
	return ids
}

// HashFile returns the SHA-256 and identity of the file at path, using the
// cache when the file has not changed.
func (t *Table) HashFile(path string) (string, dataplane.ExecIdentity, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", dataplane.ExecIdentity{}, fmt.Errorf("open executable: %w", err)
	}
	defer f.Close()
	return t.hashOpen(f)
}

// Observe updates the table from a kernel event and returns the protocol
// event with its process described. Exec events are described afresh from
// /proc; fork children inherit their parent's description; exit events
// remove the process after describing it.
func (t *Table) Observe(ev dataplane.Event) *vigilpb.Event {
	out := &vigilpb.Event{Kind: vigilpb.EventKind(ev.Kind), TimeUnixNano: t.unixNano(ev.TimeNs)}

	switch ev.Kind {
	case dataplane.EventExec:
		out.Process = t.proto(t.exec(ev))
	case dataplane.EventFork:
		out.Process = t.proto(t.fork(ev))
	case dataplane.EventExit:
		out.Process = t.proto(t.current(ev))
		out.ExitCode, out.Signal = ev.ExitCode, ev.Signal
		t.remove(ev.PID, ev.StartTimeNs)
	default:
		out.Process = t.proto(t.current(ev))
		out.Connection = connection(ev)
	}
	return out
}

// exec describes a process that just replaced its image.
func (t *Table) exec(ev dataplane.Event) Process {
	task := taskOf(ev)
	p := t.describe(task)
	if p.SHA256 == "" {
		t.describeGone(&p, ev)
	}
	t.put(p)
	return p
}

// describeGone fills in the executable of a process that exited before its
// exec event was read: the path it passed to execve is hashed when that
// file is still the one the kernel executed (same device and inode).
//
// BUG: the arguments of such a short-lived process are lost, since the
// kernel event does not carry argv and /proc no longer has it.
func (t *Table) describeGone(p *Process, ev dataplane.Event) {
	if p.Path == "" {
		p.Path = ev.Filename
	}
	if !filepath.IsAbs(ev.Filename) {
		return
	}
	sha, id, err := t.HashFile(ev.Filename)
	if err == nil && (ev.Exe == dataplane.ExecIdentity{} || id == ev.Exe) {
		p.Path, p.SHA256, p.Exe = ev.Filename, sha, id
	}
}

// fork records a new child with its parent's description.
func (t *Table) fork(ev dataplane.Event) Process {
	parent := t.current(ev)
	child := parent
	child.PID, child.PPID, child.StartTimeNs = ev.ChildPID, ev.PID, ev.ChildStartNs
	child.Args = append([]string(nil), parent.Args...)
	t.put(child)
	return child
}

// current returns the table's description of the event's process, or
// describes it now when the table does not know it.
func (t *Table) current(ev dataplane.Event) Process {
	t.mu.Lock()
	p, ok := t.procs[ev.PID]
	t.mu.Unlock()
	if ok && (p.StartTimeNs == ev.StartTimeNs || p.StartTimeNs == 0 || ev.StartTimeNs == 0) {
		return *p
	}
	np := t.describe(taskOf(ev))
	t.put(np)
	return np
}

func (t *Table) put(p Process) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.procs[p.PID] = &p
}

// remove forgets pid unless it was already reused by a newer process.
func (t *Table) remove(pid uint32, start uint64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if p, ok := t.procs[pid]; ok && (start == 0 || p.StartTimeNs == 0 || p.StartTimeNs == start) {
		delete(t.procs, pid)
	}
}

// describe completes a task with what /proc says about it.
func (t *Table) describe(task Task) Process {
	p := Process{Task: task}
	dir := filepath.Join(t.procRoot, strconv.FormatUint(uint64(task.PID), 10))

	p.Path, _ = os.Readlink(filepath.Join(dir, "exe"))
	p.Path = strings.TrimSuffix(p.Path, " (deleted)")
	if sha, id, err := t.HashFile(filepath.Join(dir, "exe")); err == nil {
		p.SHA256 = sha
		if p.Exe == (dataplane.ExecIdentity{}) {
			p.Exe = id
		}
	}

	p.Args = readCmdline(filepath.Join(dir, "cmdline"))
	p.ContainerID = containerID(filepath.Join(dir, "cgroup"))
	p.User = t.userName(p.UID)
	return p
}

// taskFromProc builds a task for a process the kernel walk did not report.
func (t *Table) taskFromProc(pid uint32) (Task, bool) {
	dir := filepath.Join(t.procRoot, strconv.FormatUint(uint64(pid), 10))
	status, err := os.ReadFile(filepath.Join(dir, "status"))
	if err != nil {
		return Task{}, false
	}

	task := Task{PID: pid}
	for _, line := range strings.Split(string(status), "\n") {
		key, val, _ := strings.Cut(line, ":")
		fields := strings.Fields(val)
		switch {
		case key == "Name" && len(fields) > 0:
			task.Comm = fields[0]
		case key == "PPid" && len(fields) > 0:
			task.PPID = parseUint32(fields[0])
		case key == "Uid" && len(fields) > 0:
			task.UID = parseUint32(fields[0])
		case key == "Gid" && len(fields) > 0:
			task.GID = parseUint32(fields[0])
		}
	}
	return task, true
}

// hashOpen hashes an open file, caching by (identity, size, mtime).
func (t *Table) hashOpen(f *os.File) (string, dataplane.ExecIdentity, error) {
	var st syscall.Stat_t
	if err := syscall.Fstat(int(f.Fd()), &st); err != nil {
		return "", dataplane.ExecIdentity{}, fmt.Errorf("stat executable: %w", err)
	}
	key := fileKey{id: IdentityFromStat(&st), size: st.Size, mtime: st.Mtim.Nano()}

	t.mu.Lock()
	sha, ok := t.hashes[key]
	t.mu.Unlock()
	if ok {
		return sha, key.id, nil
	}

	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", dataplane.ExecIdentity{}, fmt.Errorf("hash executable: %w", err)
	}
	sha = hex.EncodeToString(h.Sum(nil))
	t.remember(key, sha)
	return sha, key.id, nil
}

func (t *Table) remember(key fileKey, sha string) {
	t.mu.Lock()
	defer t.mu.Unlock()

	t.hashes[key] = sha
	if t.byHash[sha] == nil {
		t.byHash[sha] = make(map[dataplane.ExecIdentity]bool)
	}
	t.byHash[sha][key.id] = true
}

// userName maps a uid to a user name, caching the answer.
func (t *Table) userName(uid uint32) string {
	t.mu.Lock()
	name, ok := t.users[uid]
	t.mu.Unlock()
	if ok {
		return name
	}

	if u, err := user.LookupId(strconv.FormatUint(uint64(uid), 10)); err == nil {
		name = u.Username
	}
	t.mu.Lock()
	t.users[uid] = name
	t.mu.Unlock()
	return name
}

// proto converts a process, naming its parent's executable when known.
func (t *Table) proto(p Process) *vigilpb.Process {
	out := &vigilpb.Process{
		Pid: p.PID, StartTimeNs: p.StartTimeNs, Ppid: p.PPID, Uid: p.UID, Gid: p.GID,
		User: p.User, Executable: p.Path, Sha256: p.SHA256, Args: p.Args,
		CgroupId: p.CgroupID, ContainerId: p.ContainerID,
		ExeDev: p.Exe.Dev, ExeInode: p.Exe.Ino, Comm: p.Comm,
	}
	if parent, ok := t.Lookup(p.PPID); ok {
		out.ParentExecutable = parent.Path
	}
	return out
}

// unixNano converts a CLOCK_BOOTTIME timestamp to nanoseconds since the epoch.
func (t *Table) unixNano(bootNs uint64) int64 {
	if bootNs == 0 {
		return time.Now().UnixNano()
	}
	return int64(bootNs) + t.bootOffset
}

// IdentityFromStat returns the identity the kernel's exec hook reports for
// a file: stat's st_dev (already new_encode_dev) and inode, as
// dataplane.IdentityOf does.
func IdentityFromStat(st *syscall.Stat_t) dataplane.ExecIdentity {
	return dataplane.ExecIdentity{Dev: st.Dev, Ino: st.Ino}
}

func taskOf(ev dataplane.Event) Task {
	return Task{
		PID: ev.PID, PPID: ev.PPID, StartTimeNs: ev.StartTimeNs, UID: ev.UID, GID: ev.GID,
		CgroupID: ev.CgroupID, Exe: ev.Exe, Comm: ev.Comm,
	}
}

func connection(ev dataplane.Event) *vigilpb.Connection {
	c := &vigilpb.Connection{
		Protocol: vigilpb.Protocol(ev.Proto), Verdict: vigilpb.Verdict(ev.Verdict),
		RuleId: ev.RuleID, Inbound: ev.Inbound,
		RemotePort: uint32(ev.Remote.Port()), LocalPort: uint32(ev.Local.Port()),
	}
	if ev.Remote.Addr().IsValid() {
		c.RemoteAddress = ev.Remote.Addr().Unmap().String()
	}
	if ev.Local.Addr().IsValid() {
		c.LocalAddress = ev.Local.Addr().Unmap().String()
	}
	return c
}

func readCmdline(path string) []string {
	b, err := os.ReadFile(path)
	if err != nil || len(b) == 0 {
		return nil
	}
	return strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
}

// containerRE matches the 64-hex-digit ids container runtimes put in cgroup
// paths (".../docker-<id>.scope", "/docker/<id>", "cri-containerd-<id>").
var containerRE = regexp.MustCompile(`[0-9a-f]{64}`)

// containerID reads the cgroup v2 path from a /proc/PID/cgroup file and
// returns the innermost container id in it.
func containerID(path string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()

	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if cg, ok := strings.CutPrefix(sc.Text(), "0::"); ok {
			ids := containerRE.FindAllString(cg, -1)
			if len(ids) > 0 {
				return ids[len(ids)-1]
			}
		}
	}
	return ""
}

func parseUint32(s string) uint32 {
	v, _ := strconv.ParseUint(s, 10, 32)
	return uint32(v)
}

// bootOffset is the difference between the wall clock and CLOCK_BOOTTIME.
func bootOffset() int64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts); err != nil {
		return 0
	}
	return time.Now().UnixNano() - ts.Nano()
}
