//go:build integration

package reliability

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	vigilpb "github.com/vigilsec/vigil/gen/vigil/v1"
	"github.com/vigilsec/vigil/internal/testenv"
	"github.com/vigilsec/vigil/tests/harness"
)

// renamedDial is the "named" role: it renames itself with
// prctl(PR_SET_NAME) and then connects to target every 100 ms, printing
// each outcome, until killed.
func renamedDial(args []string) error {
	name, err := unix.BytePtrFromString(args[0])
	if err != nil {
		return err
	}
	if err := unix.Prctl(unix.PR_SET_NAME, uintptr(unsafe.Pointer(name)), 0, 0, 0); err != nil {
		return fmt.Errorf("prctl: %w", err)
	}
	for {
		fmt.Println(attempt(args[1]))
		time.Sleep(100 * time.Millisecond)
	}
}

// copyFile copies src to dst (mode 0755) and appends tail, which changes
// the file's SHA-256 but not what an ELF executable does.
func copyFile(t *testing.T, src, dst string, tail []byte) string {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, append(b, tail...), 0o755); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(append(b, tail...))
	return hex.EncodeToString(sum[:])
}

// identityPolicy denies executable worker the connect to denied and kills
// every exec of a file with SHA-256 victim.
func identityPolicy(worker, denied, victim string) string {
	host, port, _ := strings.Cut(denied, ":")
	return fmt.Sprintf(`version: 1
levels: [untrusted, low, medium, high]
defaults:
  level: medium
  traffic: allow
  unknown_peers: allow
indicators:
  - id: victim
    sha256: %s
    kill_on_exec: true
rules:
  - name: worker-denied
    action: deny
    subjects:
      - executables: [%s]
    destinations:
      - cidrs: [%s/32]
        ports: ["%s"]
`, victim, worker, host, port)
}

// named is a running renamedDial process.
type named struct {
	cmd   *exec.Cmd
	lines chan string
	done  chan error
}

// startNamed runs exe (a copy of the test binary) in cg as the "named"
// role under the spoofed argv[0] "sshd", renaming itself to comm.
func startNamed(t *testing.T, cg *testenv.Cgroup, exe, comm, target string) *named {
	t.Helper()
	return startRole(t, cg, exe, "sshd", "named", comm, target)
}

// startRole runs exe (the test binary or a copy) in cg as role, under
// argv[0], and collects the lines it prints.
func startRole(t *testing.T, cg *testenv.Cgroup, exe, argv0, role string, args ...string) *named {
	t.Helper()
	cmd := cg.Command(t, exe, "-test.run=^$")
	cmd.Args[0] = argv0
	cmd.Env = harness.RoleEnv(role, args...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	n := &named{cmd: cmd, lines: make(chan string, 1024), done: make(chan error, 1)}
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			select {
			case n.lines <- sc.Text():
			default:
			}
		}
		n.done <- cmd.Wait()
	}()
	t.Cleanup(func() { cmd.Process.Kill(); <-n.done })
	return n
}

// waitOutcome waits for the process to report outcome.
func (n *named) waitOutcome(t *testing.T, outcome string, timeout time.Duration) {
	t.Helper()
	deadline := time.After(timeout)
	for {
		select {
		case l := <-n.lines:
			if l == outcome {
				return
			}
		case <-deadline:
			t.Fatalf("process never reported %s", outcome)
		}
	}
}

// TestKillAndCutSemantics proves that identity is the executable, never the
// process name or argv[0]; that a kill names (pid, start time); and that
// processes and connections older than the agent are covered.
func TestKillAndCutSemantics(t *testing.T) {
	testenv.RequireRoot(t)
	s := harness.StartServer(t)
	denied := listen(t, 1)[0]
	dir := t.TempDir()
	os.Chmod(dir, 0o755)
	worker := filepath.Join(dir, "worker")
	copyFile(t, os.Args[0], worker, nil)
	tail := make([]byte, 32)
	rand.Read(tail)
	victim := filepath.Join(dir, "victim")
	victimSHA := copyFile(t, "/bin/sleep", victim, tail)
	apply(t, s, identityPolicy(worker, denied, victimSHA))
	cg := testenv.NewCgroup(t)

	// A process that predates the agent, runs under a spoofed argv[0] and
	// renames itself is still judged as the executable it is.
	old := startNamed(t, cg, worker, "kworker/0:1", denied)
	old.waitOutcome(t, outcomeOK, 5*time.Second)
	echo := listenEcho(t)
	held := startRole(t, cg, os.Args[0], os.Args[0], "hold", echo)
	held.waitOutcome(t, "connected", 5*time.Second)
	a := s.StartAgent(t, "identity", cg)
	old.waitOutcome(t, outcomeEPERM, 10*time.Second)
	if got := dialFrom(t, cg, denied); got != outcomeOK {
		t.Errorf("another executable's connect: %s, want ok (the rule names the worker only)", got)
	}

	t.Run("kill-on-exec follows the content, not the name", func(t *testing.T) {
		checkKillOnExec(t, cg, dir, victim)
	})
	t.Run("kill targets pid and start time", func(t *testing.T) {
		checkKillByStartTime(t, s, a, old, worker)
	})
	t.Run("cut reaches a connection older than the agent", func(t *testing.T) {
		checkCutOlderConnection(t, s, a, held, echo)
	})
}

// checkCutOlderConnection cuts the peer of a connection opened before the
// agent started: the connection ends, new connects are refused until
// restore, and are let through after it.
func checkCutOlderConnection(t *testing.T, s *harness.Server, a *harness.Agent, held *named, peer string) {
	s.Ctl("cut", "--agent", a.Name, "--peer", peer)
	held.waitOutcome(t, "closed", 5*time.Second)
	if got := dialFrom(t, a.Cgroup, peer); got != outcomeEPERM {
		t.Errorf("connect to a cut peer: %s, want eperm", got)
	}
	s.Ctl("restore", "--agent", a.Name, "--peer", peer)
	if got := dialFrom(t, a.Cgroup, peer); got != outcomeOK {
		t.Errorf("connect after restore: %s, want ok", got)
	}
}

// dialFrom runs one connect from the test binary itself inside cg.
func dialFrom(t *testing.T, cg *testenv.Cgroup, target string) string {
	t.Helper()
	out, _ := workload(t, cg, "", "flood", target, "1").CombinedOutput()
	if strings.TrimSpace(string(out)) == "refused 1" {
		return outcomeEPERM
	}
	return outcomeOK
}

func checkKillOnExec(t *testing.T, cg *testenv.Cgroup, dir, victim string) {
	renamed := filepath.Join(dir, "ls")
	if err := os.Rename(victim, renamed); err != nil {
		t.Fatal(err)
	}
	copied := filepath.Join(dir, "bash")
	b, _ := os.ReadFile(renamed)
	os.WriteFile(copied, b, 0o755)

	tests := []struct {
		name, path, argv0 string
		killed            bool
	}{
		{"renamed in place (same inode)", renamed, "ls", true},
		{"copied under another name (new inode)", copied, "bash", true},
		{"spoofed argv[0]", renamed, "sshd", true},
		{"unlisted executable", "/bin/sleep", "sleep", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cmd := cg.Command(t, tt.path, "1")
			cmd.Args[0] = tt.argv0
			err := cmd.Run()
			var ee *exec.ExitError
			killed := errors.As(err, &ee) && ee.Sys().(syscall.WaitStatus).Signal() == syscall.SIGKILL
			if killed != tt.killed {
				t.Errorf("%s: run ended with %v, want killed=%v", tt.path, err, tt.killed)
			}
		})
	}
}

func checkKillByStartTime(t *testing.T, s *harness.Server, a *harness.Agent, n *named, worker string) {
	pid := n.cmd.Process.Pid
	var start uint64
	harness.WaitFor(t, 10*time.Second, "an event of the renamed process", func() bool {
		for _, ev := range events(t, s, a.Name, "connect") {
			if ev.Process.PID == pid && ev.Process.StartTimeNs != 0 {
				start = ev.Process.StartTimeNs
				if ev.Process.Executable != worker {
					t.Errorf("renamed process described as %q (comm %q), want %s",
						ev.Process.Executable, ev.Process.Comm, worker)
				}
				return true
			}
		}
		return false
	})

	api := vigilpb.NewAdminServiceClient(admin(t, s))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := api.Kill(ctx, &vigilpb.KillRequest{Agent: a.Name, Pid: uint32(pid), StartTimeNs: start + 1})
	t.Logf("kill with a start time that is not the process's: %v %v", resp, err)
	select {
	case err := <-n.done:
		t.Fatalf("a kill naming another start time killed pid %d: %v", pid, err)
	case <-time.After(time.Second):
	}

	if _, err := api.Kill(ctx, &vigilpb.KillRequest{Agent: a.Name, Pid: uint32(pid), StartTimeNs: start}); err != nil {
		t.Fatalf("kill: %v", err)
	}
	select {
	case err := <-n.done:
		n.done <- err
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
			t.Fatalf("process ended with %v, want SIGKILL", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("kill naming the right start time left the process running")
	}
}

// holdConn keeps one connection to args[0] open, exchanging a byte every
// 100 ms; it prints "connected", then "closed" once the connection ends.
func holdConn(args []string) error {
	c, err := net.DialTimeout("tcp", args[0], time.Second)
	if err != nil {
		return err
	}
	fmt.Println("connected")
	buf := make([]byte, 1)
	for {
		c.SetDeadline(time.Now().Add(time.Second))
		if _, err := c.Write(buf); err != nil {
			break
		}
		if _, err := io.ReadFull(c, buf); err != nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	fmt.Println("closed")
	return nil
}

// listenEcho opens a loopback listener that echoes what each connection
// sends; it returns its address.
func listenEcho(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(c, c); c.Close() }()
		}
	}()
	return l.Addr().String()
}
