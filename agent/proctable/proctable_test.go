package proctable

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/vigilsec/vigil/agent/dataplane"
	vigilpb "github.com/vigilsec/vigil/gen/vigil/v1"
)

// copyExe copies /bin/sleep to a fresh path and returns the path and hash.
func copyExe(t *testing.T) (string, string) {
	t.Helper()
	src, err := exec.LookPath("sleep")
	if err != nil {
		t.Skip("no sleep binary")
	}
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	// Trailing bytes the loader ignores give the copy a hash of its own, so
	// a sleep that another process runs meanwhile cannot share it.
	salt := make([]byte, 16)
	rand.Read(salt)
	b = append(b, salt...)
	path := filepath.Join(t.TempDir(), "vigil-sleeper")
	if err := os.WriteFile(path, b, 0o755); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(b)
	return path, hex.EncodeToString(sum[:])
}

func startSleeper(t *testing.T, path string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(path, "30", "1")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	waitExe(t, cmd.Process.Pid, path)
	return cmd
}

// waitExe waits until pid has exec'd path (Start returns after fork).
func waitExe(t *testing.T, pid int, path string) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); {
		if got, _ := os.Readlink(filepath.Join("/proc", itoa(pid), "exe")); got == path {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("pid %d never exec'd %s", pid, path)
}

func itoa(n int) string { return strconv.Itoa(n) }

func TestSeedIdentifiesProcessesStartedBefore(t *testing.T) {
	path, sum := copyExe(t)
	cmd := startSleeper(t, path)
	pid := uint32(cmd.Process.Pid)

	tab := New("/proc")
	tab.Seed(nil)

	p, ok := tab.Lookup(pid)
	if !ok {
		t.Fatalf("pid %d not in seeded table (%d processes)", pid, tab.Len())
	}
	if p.Path != path || p.SHA256 != sum {
		t.Errorf("got path %q sha %q, want %q %q", p.Path, p.SHA256, path, sum)
	}
	if len(p.Args) != 3 || p.Args[2] != "1" {
		t.Errorf("args %q, want [path 30 1]", p.Args)
	}
	if p.PPID != uint32(os.Getpid()) {
		t.Errorf("ppid %d, want %d", p.PPID, os.Getpid())
	}
	if p.User == "" {
		t.Errorf("no user name for uid %d", p.UID)
	}

	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	ids := tab.Identities(sum)
	if len(ids) != 1 || ids[0] != IdentityFromStat(&st) || p.Exe != ids[0] {
		t.Errorf("identities for hash %v (process %v), want [%v]", ids, p.Exe, IdentityFromStat(&st))
	}
}

func TestSeedKeepsKernelStartTime(t *testing.T) {
	path, _ := copyExe(t)
	cmd := startSleeper(t, path)
	pid := uint32(cmd.Process.Pid)

	tab := New("/proc")
	tab.Seed([]Task{{PID: pid, PPID: 1, StartTimeNs: 123456789, CgroupID: 77}})
	p, _ := tab.Lookup(pid)
	if p.StartTimeNs != 123456789 || p.CgroupID != 77 || p.Path != path {
		t.Errorf("seeded %+v, want start 123456789, cgroup 77, path %s", p, path)
	}
}

func TestObserveLifecycle(t *testing.T) {
	path, sum := copyExe(t)
	cmd := startSleeper(t, path)
	pid := uint32(cmd.Process.Pid)
	tab := New("/proc")

	ev := tab.Observe(dataplane.Event{Kind: dataplane.EventExec, PID: pid, PPID: uint32(os.Getpid()), StartTimeNs: 5, Filename: "./typed-name"})
	if ev.Kind != vigilpb.EventKind_EVENT_KIND_EXEC || ev.Process.Executable != path || ev.Process.Sha256 != sum {
		t.Fatalf("exec event %v, want path %s sha %s", ev, path, sum)
	}

	ev = tab.Observe(dataplane.Event{Kind: dataplane.EventFork, PID: pid, StartTimeNs: 5, ChildPID: 999999, ChildStartNs: 6})
	if ev.Process.Pid != 999999 || ev.Process.Sha256 != sum || ev.Process.Ppid != pid {
		t.Errorf("fork child %v, want pid 999999 with parent's identity", ev.Process)
	}
	if ev.Process.ParentExecutable != path {
		t.Errorf("fork child parent executable %q, want %q", ev.Process.ParentExecutable, path)
	}

	ev = tab.Observe(dataplane.Event{Kind: dataplane.EventExit, PID: 999999, StartTimeNs: 6, ExitCode: 3})
	if ev.Process.Executable != path || ev.ExitCode != 3 {
		t.Errorf("exit event %v", ev)
	}
	if _, ok := tab.Lookup(999999); ok {
		t.Error("exited process still in table")
	}
	if chain := tab.Ancestors(pid); len(chain) != 0 && chain[0].PID != uint32(os.Getpid()) {
		t.Errorf("ancestors of %d start with %d, want %d", pid, chain[0].PID, os.Getpid())
	}
}

func TestExecOfExitedProcess(t *testing.T) {
	path, sum := copyExe(t)
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name     string
		filename string
		exe      dataplane.ExecIdentity
		wantSHA  string
	}{
		{"same file", path, IdentityFromStat(&st), sum},
		{"file replaced since", path, dataplane.ExecIdentity{Dev: 1, Ino: 2}, ""},
		{"relative path", "./vigil-sleeper", IdentityFromStat(&st), ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tab := New(t.TempDir()) // an empty /proc: the process is gone
			ev := tab.Observe(dataplane.Event{Kind: dataplane.EventExec, PID: 4242, StartTimeNs: 1, Filename: tt.filename, Exe: tt.exe})
			if ev.Process.Sha256 != tt.wantSHA || ev.Process.Executable != tt.filename {
				t.Errorf("process %v, want executable %q sha %q", ev.Process, tt.filename, tt.wantSHA)
			}
		})
	}
}

func TestPruneForgetsVanishedProcesses(t *testing.T) {
	path, _ := copyExe(t)
	cmd := startSleeper(t, path)
	tab := New("/proc")
	tab.Observe(dataplane.Event{Kind: dataplane.EventExec, PID: uint32(cmd.Process.Pid), StartTimeNs: 1})
	tab.Observe(dataplane.Event{Kind: dataplane.EventFork, PID: uint32(cmd.Process.Pid), StartTimeNs: 1, ChildPID: 1 << 30, ChildStartNs: 2})

	if n := tab.Prune(); n != 1 {
		t.Errorf("Prune removed %d, want 1 (the pid that never existed)", n)
	}
	if _, ok := tab.Lookup(uint32(cmd.Process.Pid)); !ok {
		t.Error("Prune removed a live process")
	}
}

func TestHashCacheFollowsFileChanges(t *testing.T) {
	path := filepath.Join(t.TempDir(), "f")
	os.WriteFile(path, []byte("one"), 0o644)
	tab := New("/proc")

	h1, _, err := tab.HashFile(path)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(path, []byte("two"), 0o644)
	later := time.Now().Add(time.Second)
	os.Chtimes(path, later, later)
	h2, _, _ := tab.HashFile(path)
	if h1 == h2 {
		t.Fatalf("hash unchanged after rewrite: %s", h1)
	}
	want := sha256.Sum256([]byte("two"))
	if h2 != hex.EncodeToString(want[:]) {
		t.Errorf("hash %s, want sha256(two)", h2)
	}
}

func TestContainerID(t *testing.T) {
	id := "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	tests := []struct {
		name, file, want string
	}{
		{"docker scope", "0::/system.slice/docker-" + id + ".scope\n", id},
		{"kubepods", "12:memory:/x\n0::/kubepods/burstable/pod1/" + id + "\n", id},
		{"host", "0::/user.slice/user-1000.slice\n", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "cgroup")
			os.WriteFile(path, []byte(tt.file), 0o644)
			if got := containerID(path); got != tt.want {
				t.Errorf("containerID = %q, want %q", got, tt.want)
			}
		})
	}
}

// BenchmarkObserveExec measures describing an exec of a live process whose
// executable hash is cached: the per-exec cost of enrichment.
func BenchmarkObserveExec(b *testing.B) {
	tab := New("/proc")
	ev := dataplane.Event{Kind: dataplane.EventExec, PID: uint32(os.Getpid()), StartTimeNs: 1}
	tab.Observe(ev)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		tab.Observe(ev)
	}
}
