package dataplane

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/vigilsec/vigil/internal/testenv"
)

// startSleeper starts a helper that sleeps in cg and returns it with its
// kernel start time.
func startSleeper(t *testing.T, d *Dataplane, cg interface {
	Command(testing.TB, string, ...string) *exec.Cmd
}) (*exec.Cmd, uint64) {
	t.Helper()
	self, _ := os.Executable()
	cmd := cg.Command(t, self)
	cmd.Env = append(os.Environ(), helperEnv+"=sleep")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	start, err := d.StartTime(uint32(cmd.Process.Pid))
	if err != nil {
		t.Fatalf("start time: %v", err)
	}
	return cmd, start
}

func killedBySignal(err error) bool {
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		return false
	}
	ws, ok := ee.Sys().(syscall.WaitStatus)
	return ok && ws.Signaled() && ws.Signal() == syscall.SIGKILL
}

func stillAlive(cmd *exec.Cmd) bool {
	return cmd.Process.Signal(syscall.Signal(0)) == nil
}

func TestKillByStartTime(t *testing.T) {
	d, cg := openScoped(t, Config{})
	tests := []struct {
		name    string
		offset  uint64
		wantErr error
	}{
		{"wrong start time does not kill", 1, ErrNoProcess},
		{"matching start time kills", 0, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cmd, start := startSleeper(t, d, cg)
			err := d.Kill(uint32(cmd.Process.Pid), start+tt.offset, false)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("kill: %v, want %v", err, tt.wantErr)
			}
			if tt.wantErr != nil {
				time.Sleep(50 * time.Millisecond)
				if !stillAlive(cmd) {
					t.Fatal("process died though the start time did not match")
				}
				return
			}
			if err := cmd.Wait(); !killedBySignal(err) {
				t.Fatalf("wait: %v, want SIGKILL", err)
			}
		})
	}
}

// TestKillPidReuse kills a process, makes the kernel hand its pid to a new
// process (ns_last_pid), and checks that the old identity kills nothing.
func TestKillPidReuse(t *testing.T) {
	d, cg := openScoped(t, Config{})
	for attempt := 0; attempt < 20; attempt++ {
		old, oldStart := startSleeper(t, d, cg)
		pid := old.Process.Pid
		_ = old.Process.Kill()
		_ = old.Wait()

		if err := os.WriteFile("/proc/sys/kernel/ns_last_pid", []byte(strconv.Itoa(pid-1)), 0); err != nil {
			testenv.SkipOrFail(t, "set ns_last_pid: "+err.Error())
		}
		reuser, _ := startSleeper(t, d, cg)
		if reuser.Process.Pid != pid {
			continue
		}
		if err := d.Kill(uint32(pid), oldStart, true); !errors.Is(err, ErrNoProcess) {
			t.Fatalf("kill of a dead identity: %v, want ErrNoProcess", err)
		}
		time.Sleep(50 * time.Millisecond)
		if !stillAlive(reuser) {
			t.Fatal("the process that reused the pid was killed")
		}
		return
	}
	t.Fatal("pid never reused in 20 attempts")
}

func TestKillTreeRacingForks(t *testing.T) {
	d, cg := openScoped(t, Config{})
	cmd, _ := startHelper(t, cg, "tree", "2")
	time.Sleep(100 * time.Millisecond) // let the tree fork at full speed
	start, err := d.StartTime(uint32(cmd.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	before, _ := cg.Procs()
	if err := d.Kill(uint32(cmd.Process.Pid), start, true); err != nil {
		t.Fatalf("kill tree: %v", err)
	}
	for i := 0; i < 10; i++ {
		if procs, _ := cg.Procs(); len(procs) != 0 {
			t.Fatalf("after tree kill, %d processes left (of %d): %v", len(procs), len(before), procs)
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("killed a tree of at least %d processes", len(before))
}

func TestKillOnExec(t *testing.T) {
	d, cg := openScoped(t, Config{})
	w := watchEvents(t, d)
	dir := t.TempDir()
	banned := filepath.Join(dir, "banned-touch")
	raw, err := os.ReadFile("/usr/bin/touch")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(banned, raw, 0o755); err != nil {
		t.Fatal(err)
	}
	id, err := IdentityOf(banned)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.ApplyTable(Table{KillOnExec: []ExecIdentity{id}}); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name     string
		exe      string
		wantKill bool
	}{
		{"banned identity never runs", banned, true},
		{"other binary runs", "/usr/bin/touch", false},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			marker := filepath.Join(dir, "marker"+strconv.Itoa(i))
			err := cg.Command(t, tt.exe, marker).Run()
			_, statErr := os.Stat(marker)
			if tt.wantKill && (!killedBySignal(err) || statErr == nil) {
				t.Fatalf("run: %v, marker written: %v; want SIGKILL and no marker", err, statErr == nil)
			}
			if !tt.wantKill && (err != nil || statErr != nil) {
				t.Fatalf("run: %v, marker: %v", err, statErr)
			}
		})
	}
	e := w.wait(t, "exec", func(e Event) bool { return e.Kind == EventExec && e.Exe == id })
	if e.Verdict != VerdictDeny || e.Filename != banned || e.CgroupID != cg.ID {
		t.Errorf("exec event = %+v", e)
	}
}

func TestTasksAndObservation(t *testing.T) {
	d, cg := openScoped(t, Config{})
	w := watchEvents(t, d)
	cmd, start := startSleeper(t, d, cg)
	tasks, err := d.Tasks()
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, task := range tasks {
		if task.CgroupID != cg.ID {
			t.Errorf("task %d of cgroup %d listed in scope %d", task.PID, task.CgroupID, cg.ID)
		}
		found = found || (task.PID == uint32(cmd.Process.Pid) && task.StartTimeNs == start)
	}
	if !found {
		t.Fatalf("sleeper %d not among %d tasks in scope", cmd.Process.Pid, len(tasks))
	}
	pid := uint32(cmd.Process.Pid)
	_ = cmd.Process.Kill()
	_ = cmd.Wait()

	exec := w.wait(t, "exec", func(e Event) bool { return e.Kind == EventExec && e.PID == pid })
	self, _ := os.Executable()
	id, _ := IdentityOf(self)
	if exec.StartTimeNs != start || exec.Exe != id || exec.CgroupID != cg.ID {
		t.Errorf("exec event = %+v, want start %d exe %+v", exec, start, id)
	}
	fork := w.wait(t, "fork", func(e Event) bool { return e.Kind == EventFork && e.ChildPID == pid })
	if fork.ChildStartNs != start || fork.PID != uint32(os.Getpid()) {
		t.Errorf("fork event = %+v, want child start %d from pid %d", fork, start, os.Getpid())
	}
	exit := w.wait(t, "exit", func(e Event) bool { return e.Kind == EventExit && e.PID == pid })
	if exit.Signal != uint32(syscall.SIGKILL) || exit.StartTimeNs != start {
		t.Errorf("exit event = %+v, want signal 9", exit)
	}
}
