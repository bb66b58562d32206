package bench

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	vigilpb "github.com/vigilsec/vigil/gen/vigil/v1"
	"github.com/vigilsec/vigil/internal/ctlclient"
)

// realServer is a running vigil-server binary with an admin client.
type realServer struct {
	e       *Env
	dir     string
	addr    string
	metrics string // HOST:PORT of its Prometheus metrics
	admin   vigilpb.AdminServiceClient
}

// realAgent is a running vigil-agent binary protecting one cgroup.
type realAgent struct {
	name    string
	cmd     *exec.Cmd
	metrics string
}

// freeAddr returns a loopback HOST:PORT nothing listens on.
func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// startProc starts cmd with its output in logPath and stops it at Close.
// It replaces cmd.SysProcAttr.
func (e *Env) startProc(cmd *exec.Cmd, logPath string) error {
	f, err := os.Create(logPath)
	if err != nil {
		return err
	}
	cmd.Stdout, cmd.Stderr = f, f
	// Should this program die without cleaning up, the kernel kills it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		f.Close()
		return fmt.Errorf("start %s: %w", filepath.Base(cmd.Path), err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); f.Close(); close(done) }()
	e.Defer(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-done
		}
	})
	return nil
}

// startRealServer runs bin/vigil-server on a free loopback port with
// metrics, in a fresh data directory removed at Close.
func (e *Env) startRealServer() (*realServer, error) {
	dir, err := e.tempDir("vigil-bench-server-")
	if err != nil {
		return nil, err
	}
	s := &realServer{e: e, dir: dir}
	if s.addr, err = freeAddr(); err != nil {
		return nil, err
	}
	if s.metrics, err = freeAddr(); err != nil {
		return nil, err
	}
	cmd := exec.Command(filepath.Join(e.Bin, "vigil-server"), "--data-dir", filepath.Join(dir, "data"),
		"--listen", s.addr, "--metrics", s.metrics, "--log-level", "info")
	if err := e.startProc(cmd, filepath.Join(dir, "server.log")); err != nil {
		return nil, err
	}
	creds := filepath.Join(dir, "data", "admin")
	err = waitFor(15*time.Second, "server listening", func() bool {
		_, err := os.Stat(filepath.Join(creds, "admin.key"))
		return err == nil && dialable(s.addr)
	})
	if err != nil {
		return nil, err
	}
	conn, err := ctlclient.Dial(s.addr, creds)
	if err != nil {
		return nil, err
	}
	e.Defer(func() { conn.Close() })
	s.admin = vigilpb.NewAdminServiceClient(conn)
	return s, nil
}

func dialable(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
	if err == nil {
		c.Close()
	}
	return err == nil
}

// startAgent enrolls and runs bin/vigil-agent for cg with metrics and
// the extra arguments, waits until it enforces a table, and at Close stops
// it and removes its pins.
func (s *realServer) startAgent(name string, cg *Cgroup, extra ...string) (*realAgent, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	tok, err := s.admin.CreateToken(ctx, &vigilpb.CreateTokenRequest{})
	if err != nil {
		return nil, fmt.Errorf("create token: %w", err)
	}
	a := &realAgent{name: name}
	if a.metrics, err = freeAddr(); err != nil {
		return nil, err
	}
	agentBin := filepath.Join(s.e.Bin, "vigil-agent")
	s.e.Defer(func() {
		out, err := exec.Command(agentBin, "--cleanup", "--cgroup", cg.Path).CombinedOutput()
		if err != nil {
			s.e.Log.Warn("vigil-agent --cleanup", "err", err, "out", string(out))
		}
	})
	args := append([]string{"--server", s.addr, "--token", tok.GetToken(), "--name", name,
		"--data-dir", filepath.Join(s.dir, "agent-"+name), "--cgroup", cg.Path,
		"--metrics", a.metrics, "--log-level", "info"}, extra...)
	a.cmd = exec.Command(agentBin, args...)
	if err := s.e.startProc(a.cmd, filepath.Join(s.dir, "agent-"+name+".log")); err != nil {
		return nil, err
	}
	return a, waitFor(30*time.Second, "agent "+name+" online", func() bool { return s.online(name) })
}

func (s *realServer) online(name string) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	resp, err := s.admin.ListAgents(ctx, &vigilpb.ListAgentsRequest{})
	if err != nil {
		return false
	}
	for _, a := range resp.GetAgents() {
		if a.GetName() == name && a.GetOnline() && a.GetTableVersion() > 0 {
			return true
		}
	}
	return false
}

func waitFor(timeout time.Duration, what string, cond func() bool) error {
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			return fmt.Errorf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return nil
}

// scrape reads a Prometheus endpoint and sums each metric over its labels.
func scrape(addr string) (map[string]float64, error) {
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get("http://" + addr + "/metrics")
	if err != nil {
		return nil, fmt.Errorf("scrape %s: %w", addr, err)
	}
	defer resp.Body.Close()
	return parseMetrics(resp.Body)
}

func parseMetrics(r io.Reader) (map[string]float64, error) {
	out := map[string]float64{}
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		name, _, _ := strings.Cut(line[:i], "{")
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			return nil, fmt.Errorf("parse metric line %q: %w", line, err)
		}
		out[name] += v
	}
	return out, sc.Err()
}

// cpuSeconds is the user+system CPU time of a process, from /proc/PID/stat.
func cpuSeconds(pid int) (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// Fields after the command name, which may hold spaces, start at ")".
	_, rest, _ := strings.Cut(string(b), ") ")
	f := strings.Fields(rest)
	if len(f) < 13 {
		return 0, fmt.Errorf("short /proc/%d/stat", pid)
	}
	utime, _ := strconv.ParseFloat(f[11], 64)
	stime, _ := strconv.ParseFloat(f[12], 64)
	return (utime + stime) / clockTicks, nil
}

// clockTicks is USER_HZ, which is 100 on every Linux architecture Vigil
// runs on.
const clockTicks = 100
