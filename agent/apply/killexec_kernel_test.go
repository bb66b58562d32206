package apply

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vigilsec/vigil/agent/dataplane"
	"github.com/vigilsec/vigil/agent/proctable"
	vigilpb "github.com/vigilsec/vigil/gen/vigil/v1"
	"github.com/vigilsec/vigil/internal/testenv"
)

// TestOnExecKillsForkedChildren runs, in a scope of its own with a real
// data plane, a listed executable that forks at once, and checks that the
// user-space kill on its exec takes the children with it.
func TestOnExecKillsForkedChildren(t *testing.T) {
	testenv.RequireRoot(t)
	cg := testenv.NewCgroup(t)
	pin := filepath.Join(dataplane.DefaultPinRoot, "test-"+filepath.Base(cg.Path))
	t.Cleanup(func() { _ = dataplane.Cleanup(pin) })
	dp, err := dataplane.Open(dataplane.Config{CgroupPath: cg.Path, PinPath: pin})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dp.Close() })
	drain(t, dp)

	// A hash no file has: the kernel cannot kill the exec, as for a file it
	// did not know yet, so the kill is the user-space one.
	listed := strings.Repeat("ab", 32)
	a, err := New(Config{Kernel: dp, Resolver: proctable.New("/proc"), StateDir: t.TempDir(), Scope: cg.Path})
	if err != nil {
		t.Fatal(err)
	}
	if ack := a.ApplyTable(&vigilpb.VerdictTable{Version: 1, KillOnExec: []string{listed},
		DefaultEgress: vigilpb.Verdict_VERDICT_ALLOW}); ack.Error != "" {
		t.Fatal(ack.Error)
	}

	cmd := cg.Command(t, "/bin/sh", "-c", "sleep 300 & sleep 300 & wait")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	waitProcs(t, cg, 3)
	pid := uint32(cmd.Process.Pid)
	start, err := dp.StartTime(pid)
	if err != nil {
		t.Fatal(err)
	}

	p := proctable.Process{Task: dataplane.Task{PID: pid, StartTimeNs: start}, Path: "/bin/sh", SHA256: listed}
	killed, err := a.OnExec(p)
	if err != nil || !killed {
		t.Fatalf("on exec: killed %v err %v", killed, err)
	}
	_ = cmd.Wait()
	waitProcs(t, cg, 0)
}

// waitProcs waits until cg holds exactly n processes.
func waitProcs(t *testing.T, cg *testenv.Cgroup, n int) {
	t.Helper()
	var procs []int
	for deadline := time.Now().Add(3 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if procs, _ = cg.Procs(); len(procs) == n {
			return
		}
	}
	t.Fatalf("cgroup holds %v, want %d processes", procs, n)
}
