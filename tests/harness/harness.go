// Package harness starts Vigil's real binaries for end-to-end, reliability
// and benchmark tests: it builds vigil-server, vigil-agent and vigilctl once,
// runs a server on a free loopback port, enrolls agents that each protect a
// test cgroup, and drives everything through vigilctl. Every process it
// starts is killed and every scope it enrolled is cleaned up when the test
// ends.
package harness

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vigilsec/vigil/agent/dataplane"
	"github.com/vigilsec/vigil/internal/testenv"
)

// binaries are built once per test run into a shared directory.
var (
	buildOnce sync.Once
	binDir    string
	buildErr  error
)

func repoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

// bins builds vigil-server, vigil-agent and vigilctl once and returns their
// directory.
func Bins(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		binDir, buildErr = os.MkdirTemp("", "vigil-e2e-bin-")
		if buildErr != nil {
			return
		}
		cmd := exec.Command("go", "build", "-o", binDir+"/",
			"./cmd/vigil-server", "./cmd/vigil-agent", "./cmd/vigilctl")
		cmd.Dir = repoRoot()
		out, err := cmd.CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %w\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binDir
}

// Main runs a test package's tests and removes the built binaries after;
// call it from TestMain.
func Main(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// freeAddr returns a loopback address with a port nothing listens on.
func FreeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// proc is a background process whose output goes to a log file.
type Proc struct {
	cmd  *exec.Cmd
	log  string
	done chan struct{}
}

func StartProc(t *testing.T, logPath string, cmd *exec.Cmd) *Proc {
	t.Helper()
	f, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", cmd.Path, err)
	}
	p := &Proc{cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() { cmd.Wait(); f.Close(); close(p.done) }()
	t.Cleanup(func() { p.Stop(syscall.SIGKILL) })
	return p
}

func (p *Proc) Stop(sig syscall.Signal) {
	select {
	case <-p.done:
		return
	default:
	}
	p.cmd.Process.Signal(sig)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		p.cmd.Process.Kill()
		<-p.done
	}
}

// Signal sends sig to the process without waiting (SIGSTOP and SIGCONT
// pause and resume it).
func (p *Proc) Signal(sig syscall.Signal) error { return p.cmd.Process.Signal(sig) }

// Pid is the process id.
func (p *Proc) Pid() int { return p.cmd.Process.Pid }

func (p *Proc) Output() string {
	b, _ := os.ReadFile(p.log)
	return string(b)
}

// server is a running vigil-server with admin credentials for vigilctl.
type Server struct {
	T      *testing.T
	Dir    string // holds data/, logs and the agents' directories
	Addr   string // loopback HOST:PORT it listens on
	Creds  string // admin credentials directory for vigilctl
	Proc   *Proc
	BinDir string
	// NetNS, when set, is the network namespace (ip netns) the server and
	// every vigilctl run of Ctl, CtlErr and FollowEvents execute in.
	NetNS string
	// Args are extra vigil-server arguments; Start passes them every time.
	Args []string
}

// StartServerIn starts a server inside the network namespace netns,
// listening on addr (an address that exists in that namespace).
func StartServerIn(t *testing.T, netns, addr string, extra ...string) *Server {
	t.Helper()
	s := &Server{T: t, Dir: t.TempDir(), Addr: addr, BinDir: Bins(t), NetNS: netns, Args: extra}
	s.Creds = filepath.Join(s.Dir, "data", "admin")
	s.Start()
	// Registered after Start, so it runs while the server still answers.
	t.Cleanup(func() {
		if t.Failed() {
			s.dumpLogs()
		}
	})
	return s
}

func StartServer(t *testing.T) *Server {
	t.Helper()
	s := &Server{T: t, Dir: t.TempDir(), Addr: FreeAddr(t), BinDir: Bins(t)}
	s.Creds = filepath.Join(s.Dir, "data", "admin")
	s.Start()
	// Registered after Start, so it runs while the server still answers.
	t.Cleanup(func() {
		if t.Failed() {
			s.dumpLogs()
		}
	})
	return s
}

// Start starts (or restarts) the server process on its data directory and
// waits until it accepts connections.
func (s *Server) Start() {
	t := s.T
	args := append([]string{"--data-dir", filepath.Join(s.Dir, "data"), "--listen", s.Addr}, s.Args...)
	cmd := InNetNS(s.NetNS, filepath.Join(s.BinDir, "vigil-server"), args...)
	s.Proc = StartProc(t, filepath.Join(s.Dir, fmt.Sprintf("server-%d.log", time.Now().UnixNano())), cmd)
	WaitFor(t, 15*time.Second, "server listening", func() bool {
		if _, err := os.Stat(filepath.Join(s.Creds, "admin.key")); err != nil {
			return false
		}
		if s.NetNS != "" {
			_, err := s.CtlErr("agents", "list")
			return err == nil
		}
		c, err := net.DialTimeout("tcp", s.Addr, 200*time.Millisecond)
		if err != nil {
			return false
		}
		c.Close()
		return true
	})
}

// InNetNS returns a command that runs name with args inside the network
// namespace netns (an ip netns name), or directly when netns is empty. It
// enters with nsenter, which execs in place (the pid is the program's) and,
// unlike ip netns exec, keeps the mounts, so cgroupfs and bpffs stay visible.
func InNetNS(netns, name string, args ...string) *exec.Cmd {
	if netns == "" {
		return exec.Command(name, args...)
	}
	return exec.Command("nsenter", append([]string{"--net=/run/netns/" + netns, "--", name}, args...)...)
}

// dumpLogs writes the tail of every server and agent log to the test log.
func (s *Server) dumpLogs() {
	if out, err := s.CtlErr("events", "--limit", "400"); err == nil {
		s.T.Logf("== vigilctl events\n%s", out)
	}
	logs, _ := filepath.Glob(filepath.Join(s.Dir, "*.log"))
	for _, f := range logs {
		b, _ := os.ReadFile(f)
		s.T.Logf("== %s\n%s", filepath.Base(f), Tail(string(b), 40))
	}
}

// Ctl runs vigilctl against the server and returns stdout; it fails the
// test on a non-zero exit.
func (s *Server) Ctl(args ...string) string {
	s.T.Helper()
	out, err := s.CtlErr(args...)
	if err != nil {
		s.T.Fatalf("vigilctl %s: %v\n%s\nserver log:\n%s", strings.Join(args, " "), err, out, Tail(s.Proc.Output(), 40))
	}
	return out
}

func (s *Server) CtlErr(args ...string) (string, error) {
	all := append([]string{"--server", s.Addr, "--credentials", s.Creds}, args...)
	cmd := InNetNS(s.NetNS, filepath.Join(s.BinDir, "vigilctl"), all...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if err != nil {
		return stdout.String() + stderr.String(), err
	}
	return stdout.String(), nil
}

func (s *Server) Token() string {
	s.T.Helper()
	out := strings.TrimSpace(s.Ctl("token", "create"))
	fields := strings.Fields(out)
	if len(fields) == 0 {
		s.T.Fatalf("token create printed nothing")
	}
	return fields[len(fields)-1]
}

// agent is a running vigil-agent protecting one test cgroup.
type Agent struct {
	T      *testing.T
	Name   string
	Dir    string
	Cgroup *testenv.Cgroup
	Args   []string // vigil-agent arguments; Start reuses them
	Proc   *Proc
	BinDir string
	NetNS  string // network namespace the agent runs in; "" = the test's
}

// startAgent enrolls and starts an agent named name that protects cg.
func (s *Server) StartAgent(t *testing.T, name string, cg *testenv.Cgroup, extra ...string) *Agent {
	t.Helper()
	return s.StartAgentIn(t, "", name, cg, extra...)
}

// StartAgentIn is StartAgent with the agent running in the network
// namespace netns ("" = the test's own).
func (s *Server) StartAgentIn(t *testing.T, netns, name string, cg *testenv.Cgroup, extra ...string) *Agent {
	t.Helper()
	a := &Agent{T: t, Name: name, Dir: filepath.Join(s.Dir, "agent-"+name), Cgroup: cg, BinDir: s.BinDir,
		NetNS: netns}
	a.Args = append([]string{
		"--server", s.Addr, "--token", s.Token(), "--data-dir", a.Dir,
		"--name", name, "--cgroup", cg.Path,
	}, extra...)
	t.Cleanup(func() {
		if a.Proc != nil {
			a.Proc.Stop(syscall.SIGKILL)
		}
		out, err := exec.Command(filepath.Join(a.BinDir, "vigil-agent"), "--cleanup", "--cgroup", cg.Path).CombinedOutput()
		if err != nil {
			t.Errorf("vigil-agent --cleanup: %v\n%s", err, out)
		}
		if _, err := os.Stat(dataplane.PinPathFor(cg.Path)); err == nil {
			t.Errorf("pins left at %s", dataplane.PinPathFor(cg.Path))
		}
	})
	a.Start()
	s.WaitAgentOnline(t, name)
	return a
}

// Start starts (or restarts) the agent process with a.Args.
func (a *Agent) Start() {
	cmd := InNetNS(a.NetNS, filepath.Join(a.BinDir, "vigil-agent"), a.Args...)
	a.Proc = StartProc(a.T, filepath.Join(a.Dir+fmt.Sprintf("-%d.log", time.Now().UnixNano())), cmd)
}

func (s *Server) WaitAgentOnline(t *testing.T, name string) {
	t.Helper()
	WaitFor(t, 20*time.Second, "agent "+name+" online", func() bool {
		out, err := s.CtlErr("agents", "list", "-o", "json")
		if err != nil {
			return false
		}
		for _, ag := range DecodeAgents(t, out) {
			if ag.Name == name && ag.Online && ag.TableVersion > 0 {
				return true
			}
		}
		return false
	})
}

type AgentRow struct {
	Name         string `json:"name"`
	Online       bool   `json:"online"`
	Level        string `json:"level"`
	TableVersion uint64 `json:"tableVersion,string"`
}

func DecodeAgents(t *testing.T, out string) []AgentRow {
	var wrapped struct {
		Agents []AgentRow `json:"agents"`
	}
	if err := json.Unmarshal([]byte(out), &wrapped); err != nil {
		t.Logf("decode agents list: %v: %s", err, out)
	}
	return wrapped.Agents
}

func WaitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func Tail(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// followEvents runs `vigilctl events --follow -o json` and delivers each line.
func (s *Server) FollowEvents(t *testing.T) <-chan string {
	cmd := InNetNS(s.NetNS, filepath.Join(s.BinDir, "vigilctl"),
		"--server", s.Addr, "--credentials", s.Creds, "events", "--follow", "-o", "json")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := make(chan string, 1024)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(out)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	return lines
}
