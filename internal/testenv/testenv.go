// Package testenv gives tests that touch the kernel a scoped, self-cleaning
// environment: a root check that skips on a laptop and fails in CI, and
// throwaway cgroup v2 directories to attach programs to and run processes in.
// It is imported only by tests.
package testenv

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// CgroupRoot is where cgroup v2 is mounted on Vigil's machines.
const CgroupRoot = "/sys/fs/cgroup/unified"

// Required reports whether missing root or BPF support must fail the test
// rather than skip it (VIGIL_REQUIRE_BPF=1, as CI sets).
func Required() bool { return os.Getenv("VIGIL_REQUIRE_BPF") == "1" }

// RequireRoot skips the test when not running as root, or fails it when
// VIGIL_REQUIRE_BPF=1.
func RequireRoot(tb testing.TB) {
	tb.Helper()
	if os.Geteuid() == 0 {
		if _, err := os.Stat(filepath.Join(CgroupRoot, "cgroup.procs")); err == nil {
			return
		}
		skipOrFail(tb, "cgroup v2 is not mounted at "+CgroupRoot)
		return
	}
	skipOrFail(tb, "needs root for BPF and cgroups")
}

// SkipOrFail skips with reason, or fails when VIGIL_REQUIRE_BPF=1.
func SkipOrFail(tb testing.TB, reason string) {
	tb.Helper()
	skipOrFail(tb, reason)
}

func skipOrFail(tb testing.TB, reason string) {
	tb.Helper()
	if Required() {
		tb.Fatalf("VIGIL_REQUIRE_BPF=1 but: %s", reason)
	}
	tb.Skip(reason)
}

// Cgroup is a cgroup v2 directory created for one test.
type Cgroup struct {
	Path string // absolute path
	ID   uint64 // cgroup id (the directory's inode), as bpf_get_current_cgroup_id returns
}

// NewCgroup creates a fresh cgroup under the v2 root (or under parent when
// given) and removes it when the test ends, after killing any process the
// test left in it.
func NewCgroup(tb testing.TB, parent ...string) *Cgroup {
	tb.Helper()
	RequireRoot(tb)

	base := CgroupRoot
	if len(parent) > 0 {
		base = parent[0]
	}
	dir, err := os.MkdirTemp(base, "vigil-test-")
	if err != nil {
		tb.Fatalf("create cgroup: %v", err)
	}
	var st syscall.Stat_t
	if err := syscall.Stat(dir, &st); err != nil {
		tb.Fatalf("stat cgroup: %v", err)
	}
	cg := &Cgroup{Path: dir, ID: st.Ino}
	tb.Cleanup(func() { cg.remove(tb) })
	return cg
}

// Command returns a command that starts inside the cgroup (clone3 with
// CLONE_INTO_CGROUP), so not one instruction runs outside it.
func (c *Cgroup) Command(tb testing.TB, name string, args ...string) *exec.Cmd {
	tb.Helper()
	fd, err := syscall.Open(c.Path, syscall.O_DIRECTORY|syscall.O_RDONLY, 0)
	if err != nil {
		tb.Fatalf("open cgroup: %v", err)
	}
	tb.Cleanup(func() { syscall.Close(fd) })

	cmd := exec.Command(name, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: fd}
	return cmd
}

// Procs lists the pids in the cgroup (not below it).
func (c *Cgroup) Procs() ([]int, error) {
	b, err := os.ReadFile(filepath.Join(c.Path, "cgroup.procs"))
	if err != nil {
		return nil, err
	}
	var pids []int
	for _, f := range strings.Fields(string(b)) {
		pid, err := strconv.Atoi(f)
		if err != nil {
			return nil, fmt.Errorf("parse cgroup.procs: %w", err)
		}
		pids = append(pids, pid)
	}
	return pids, nil
}

// remove kills what the test started in the cgroup (cgroup.kill) and
// removes the directory tree, children first.
func (c *Cgroup) remove(tb testing.TB) {
	_ = os.WriteFile(filepath.Join(c.Path, "cgroup.kill"), []byte("1"), 0)
	deadline := time.Now().Add(5 * time.Second)
	for {
		err := removeTree(c.Path)
		if err == nil || os.IsNotExist(err) {
			return
		}
		if time.Now().After(deadline) {
			tb.Errorf("remove cgroup %s: %v", c.Path, err)
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func removeTree(dir string) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if e.IsDir() {
			if err := removeTree(filepath.Join(dir, e.Name())); err != nil {
				return err
			}
		}
	}
	return syscall.Rmdir(dir)
}
