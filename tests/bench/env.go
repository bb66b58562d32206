package bench

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// cgroupRoot is where cgroup v2 is mounted on Vigil's machines.
const cgroupRoot = "/sys/fs/cgroup/unified"

// Env is what a scenario runs in: its options, a logger, and the cleanups
// of everything it created. Scenarios run one at a time; Env is not safe
// for concurrent use except Defer and Close.
type Env struct {
	Log   *slog.Logger
	Quick bool   // fewer rounds and smaller samples, for smoke runs
	Bin   string // directory with vigil-server, vigil-agent and vigilctl
	Self  string // this executable, re-executed for workers
	Keep  bool   // keep data directories and logs of the real binaries

	closing  sync.Mutex // held while Close runs, so a second Close waits for the first
	mu       sync.Mutex
	cleanups []func() // guarded by mu; run last first by Close
}

// NewEnv returns an Env; the caller must Close it.
func NewEnv(log *slog.Logger, bin string, quick bool) (*Env, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("find own executable: %w", err)
	}
	return &Env{Log: log, Quick: quick, Bin: bin, Self: self}, nil
}

// child returns an Env with the same options whose cleanups run at its
// own Close, or at e's Close at the latest.
func (e *Env) child() *Env {
	c := &Env{Log: e.Log, Quick: e.Quick, Bin: e.Bin, Self: e.Self, Keep: e.Keep}
	e.Defer(c.Close)
	return c
}

// Defer registers f to run at Close, after every cleanup registered later.
func (e *Env) Defer(f func()) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.cleanups = append(e.cleanups, f)
}

// Close runs the cleanups, last registered first. A Close while another
// runs (an interrupt) returns when the first is done.
func (e *Env) Close() {
	e.closing.Lock()
	defer e.closing.Unlock()
	e.mu.Lock()
	fns := e.cleanups
	e.cleanups = nil
	e.mu.Unlock()
	for i := len(fns) - 1; i >= 0; i-- {
		fns[i]()
	}
}

// tempDir creates a directory removed at Close unless Keep is set.
func (e *Env) tempDir(pattern string) (string, error) {
	dir, err := os.MkdirTemp("", pattern)
	if err != nil {
		return "", err
	}
	if e.Keep {
		e.Log.Info("keeping directory", "dir", dir)
		return dir, nil
	}
	e.Defer(func() { os.RemoveAll(dir) })
	return dir, nil
}

// rounds picks the number of interleaved rounds.
func (e *Env) rounds(full, quick int) int {
	if e.Quick {
		return quick
	}
	return full
}

// Cgroup is a cgroup v2 directory a scenario created.
type Cgroup struct {
	Path string
	ID   uint64 // the directory's inode, as bpf_get_current_cgroup_id returns
	fd   int    // open directory, for CLONE_INTO_CGROUP
}

// NewCgroup creates a cgroup under the v2 root; Close kills what runs in
// it and removes it.
func (e *Env) NewCgroup() (*Cgroup, error) {
	dir, err := os.MkdirTemp(cgroupRoot, "vigil-bench-")
	if err != nil {
		return nil, fmt.Errorf("create cgroup: %w", err)
	}
	cg := &Cgroup{Path: dir}
	e.Defer(func() { e.removeCgroup(cg) })
	var st unix.Stat_t
	if err := unix.Stat(dir, &st); err != nil {
		return nil, fmt.Errorf("stat cgroup: %w", err)
	}
	cg.ID = st.Ino
	cg.fd, err = unix.Open(dir, unix.O_DIRECTORY|unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open cgroup: %w", err)
	}
	return cg, nil
}

func (e *Env) removeCgroup(cg *Cgroup) {
	if cg.fd > 0 {
		unix.Close(cg.fd)
	}
	_ = os.WriteFile(filepath.Join(cg.Path, "cgroup.kill"), []byte("1"), 0)
	deadline := time.Now().Add(5 * time.Second)
	for {
		err := unix.Rmdir(cg.Path)
		if err == nil || errors.Is(err, os.ErrNotExist) {
			return
		}
		if time.Now().After(deadline) {
			e.Log.Warn("remove cgroup", "cgroup", cg.Path, "err", err)
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Command returns a command that starts inside the cgroup (clone3 with
// CLONE_INTO_CGROUP), so not one instruction runs outside it.
func (cg *Cgroup) Command(name string, args ...string) *exec.Cmd {
	cmd := exec.Command(name, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: cg.fd, Pdeathsig: syscall.SIGKILL}
	return cmd
}

// Worker returns a command running this program in worker mode inside cg
// (nil: in the caller's cgroup).
func (e *Env) Worker(cg *Cgroup, mode string, args ...string) *exec.Cmd {
	var cmd *exec.Cmd
	if cg != nil {
		cmd = cg.Command(e.Self, args...)
	} else {
		cmd = exec.Command(e.Self, args...)
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	}
	cmd.Env = append(os.Environ(), workerEnv+"="+mode)
	cmd.Stderr = os.Stderr
	return cmd
}

// RaiseFileLimit lifts RLIMIT_NOFILE, which children inherit, to n, or
// when the hard limit cannot be raised (no CAP_SYS_RESOURCE) to the hard
// limit; it returns the limit in force. The fan-out scenario holds one
// socket per simulated agent in each of two processes.
func RaiseFileLimit(n uint64) (uint64, error) {
	lim := unix.Rlimit{Cur: n, Max: n}
	if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &lim); err == nil {
		return n, nil
	}
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		return 0, fmt.Errorf("read RLIMIT_NOFILE: %w", err)
	}
	lim.Cur = lim.Max
	if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		return 0, fmt.Errorf("raise RLIMIT_NOFILE to %d: %w", lim.Max, err)
	}
	return lim.Cur, nil
}

// monoNow is CLOCK_MONOTONIC in nanoseconds, comparable across processes.
func monoNow() int64 {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return ts.Nano()
}

// ensureTool installs Debian package pkg when command is not on PATH, as
// the benchmark setup of the nftables and auditd comparisons.
func (e *Env) ensureTool(command, pkg string) error {
	if _, err := exec.LookPath(command); err == nil {
		return nil
	}
	e.Log.Info("installing package", "package", pkg)
	cmd := exec.Command("apt-get", "install", "-y", "--no-install-recommends", pkg)
	cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("apt-get install %s: %w: %s", pkg, err, lastLine(out))
	}
	if _, err := exec.LookPath(command); err != nil {
		return fmt.Errorf("%s still missing after installing %s", command, pkg)
	}
	return nil
}

func lastLine(out []byte) string {
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	return lines[len(lines)-1]
}
