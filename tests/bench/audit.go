package bench

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"
)

// auditKey tags the audit rules this package adds.
const auditKey = "vigil-bench"

// auditRules observe what Vigil's observation hooks see: every execve and
// every connect, of every process (audit has no cgroup scope).
var auditRules = [][]string{
	{"-F", "arch=b64", "-S", "execve", "-k", auditKey},
	{"-F", "arch=b64", "-S", "connect", "-k", auditKey},
}

// auditd is a running audit daemon with the kernel's audit settings as
// they were before it started.
type auditd struct {
	e       *Env
	enabled string // audit "enabled" setting to restore
	backlog string // backlog_limit to restore
}

// startAuditd makes sure an audit daemon is collecting records: it starts
// auditd -n (stopped at Close) when none runs. Its error says exactly why
// audit is unavailable.
func (e *Env) startAuditd() (*auditd, error) {
	if err := e.ensureTool("auditctl", "auditd"); err != nil {
		return nil, err
	}
	st, err := auditStatus()
	if err != nil {
		return nil, err
	}
	a := &auditd{e: e, enabled: st["enabled"], backlog: st["backlog_limit"]}
	e.Defer(a.restore)
	if st["pid"] == "0" {
		if err := e.spawnAuditd(); err != nil {
			return nil, err
		}
	}
	if err := auditctl("-b", "8192"); err != nil {
		return nil, err
	}
	if err := auditctl("-e", "1"); err != nil {
		return nil, err
	}

	// Rules that cannot be loaded make the variant unavailable up front.
	if err := a.addRules(); err != nil {
		return nil, err
	}
	a.removeRules()
	return a, nil
}

func (e *Env) spawnAuditd() error {
	cmd := exec.Command("auditd", "-n")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start auditd: %w", err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	e.Defer(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			cmd.Process.Kill()
			<-done
		}
	})
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		st, err := auditStatus()
		if err == nil && st["pid"] == fmt.Sprint(cmd.Process.Pid) {
			return nil
		}
		select {
		case <-done:
			return fmt.Errorf("auditd exited at start: %v", cmd.ProcessState)
		case <-time.After(50 * time.Millisecond):
		}
	}
	return fmt.Errorf("auditd did not register with the kernel within 5s")
}

func (a *auditd) restore() {
	a.removeRules()
	if a.backlog != "" {
		_ = auditctl("-b", a.backlog)
	}
	if a.enabled != "" {
		_ = auditctl("-e", a.enabled)
	}
}

// addRules loads the execve and connect rules; removeRules takes them out.
func (a *auditd) addRules() error {
	for _, r := range auditRules {
		if err := auditctl(append([]string{"-a", "always,exit"}, r...)...); err != nil {
			a.removeRules()
			return err
		}
	}
	return nil
}

func (a *auditd) removeRules() {
	for _, r := range auditRules {
		_ = auditctl(append([]string{"-d", "always,exit"}, r...)...)
	}
}

func auditctl(args ...string) error {
	out, err := exec.Command("auditctl", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("auditctl %s: %w: %s", strings.Join(args, " "), err, firstLine(out))
	}
	return nil
}

// auditStatus parses auditctl -s.
func auditStatus() (map[string]string, error) {
	out, err := exec.Command("auditctl", "-s").CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("auditctl -s: %w: %s", err, firstLine(out))
	}
	st := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), " "); ok {
			st[k] = strings.TrimSpace(v)
		}
	}
	return st, nil
}
