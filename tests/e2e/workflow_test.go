//go:build integration

package e2e

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"

	vigilpb "github.com/vigilsec/vigil/gen/vigil/v1"
	"github.com/vigilsec/vigil/internal/testenv"
	"github.com/vigilsec/vigil/tests/harness"
	"github.com/vigilsec/vigil/tests/scenario"
)

const (
	deviceAddr  = scenario.DeviceAddr
	serviceAddr = scenario.ServiceAddr
)

// threatIntelResponse kills, at once and at every later exec, a binary the
// policy's own indicators name, and drops its device to low.
const threatIntelResponse = `protections:
  - name: threat-intel-hit
    when:
      detectors: [threat-intel]
      entity: process
    respond:
      set_level: {target: device, level: low, for: 30m}
      kill: true
      kill_on_exec: true
      cut: true
indicators:
  - id: evil-sleep
    sha256: %s
`

// TestWorkflow plays the framework's steps 1-8: enroll, allowed access, a
// detection that lowers the device's level, the kernel's kill, cut and deny
// on both hosts, a result from an existing system that restores access,
// explanations, the event record, and a rejected policy that changes nothing.
func TestWorkflow(t *testing.T) {

	testenv.RequireRoot(t)
	srv := harness.StartServer(t)

	// A malicious binary: a copy of sleep made unique, so its hash is ours.
	evil, evilHash := harness.UniqueBinary(t, "/usr/bin/sleep")
	port := freePort(t, serviceAddr)
	policyFile := filepath.Join(t.TempDir(), "policy.yaml")
	writeFile(t, policyFile, scenario.Policy(port, fmt.Sprintf(threatIntelResponse, evilHash)))

	// Step 1: both hosts enroll; each agent protects its own cgroup.
	deviceCg, serviceCg := testenv.NewCgroup(t), testenv.NewCgroup(t)
	srv.Ctl("policy", "apply", "-f", policyFile)
	srv.StartAgent(t, "laptop", deviceCg, "--address", deviceAddr)
	srv.StartAgent(t, "crm-host", serviceCg, "--address", serviceAddr)
	events := srv.FollowEvents(t)

	service := workload(t, serviceCg, "serve", net.JoinHostPort(serviceAddr, fmt.Sprint(port)))
	waitOutput(t, service, "listening")
	crm := net.JoinHostPort(serviceAddr, fmt.Sprint(port))
	from := net.JoinHostPort(deviceAddr, "0")

	// Step 6: the kernel admits the device to the service.
	harness.WaitFor(t, 10*time.Second, "laptop reaches crm", func() bool {
		return dialOnce(t, deviceCg, from, crm) == "ok"
	})
	held := workload(t, deviceCg, "hold", from, crm)
	heldOut := waitOutput(t, held, "connected")

	// Step 4: a process on the device runs a binary named by threat intel.
	evilCmd := deviceCg.Command(t, evil, "300")
	if err := evilCmd.Start(); err != nil {
		t.Fatalf("start evil binary: %v", err)
	}
	evilDone := make(chan error, 1)
	go func() { evilDone <- evilCmd.Wait() }()

	// Steps 5-8: it is killed, the device drops to low, the open connection
	// is cut, and new connects fail on the device and on the service host.
	select {
	case err := <-evilDone:
		requireKilled(t, err)
	case <-time.After(15 * time.Second):
		t.Fatalf("evil binary still running after 15s\n%s", harness.Tail(srv.Proc.Output(), 30))
	}
	harness.WaitFor(t, 10*time.Second, "device/laptop at low", func() bool {
		return srv.EntityLevel("device/laptop") == "low"
	})
	waitLine(t, heldOut, "closed", 10*time.Second)
	harness.WaitFor(t, 10*time.Second, "laptop refused by its kernel", func() bool {
		return dialOnce(t, deviceCg, from, crm) == "eperm"
	})
	assertIngressRefused(t, crm)

	// Deny-exec: the next exec of the same file dies before it runs.
	rerun := deviceCg.Command(t, evil, "300")
	requireKilled(t, rerun.Run())

	// Explain names the rule, the levels compared and the finding.
	why := explain(t, srv, "laptop", crm)
	if why.GetVerdict() != vigilpb.Verdict_VERDICT_DENY {
		t.Errorf("explain verdict = %v, want deny: %v", why.GetVerdict(), why)
	}
	if !strings.Contains(strings.Join(why.GetReasons(), " "), "low") || len(why.GetFindings()) == 0 {
		t.Errorf("explain gives no levels or findings: %v", why)
	}

	// A result from an existing system raises the level: access is restored.
	srv.Ctl("report", "--entity", "device/laptop", "--level", "high",
		"--source", "edr", "--reason", "cleaned")
	harness.WaitFor(t, 10*time.Second, "laptop restored", func() bool {
		return dialOnce(t, deviceCg, from, crm) == "ok"
	})
	if why := explain(t, srv, "laptop", crm); why.GetVerdict() != vigilpb.Verdict_VERDICT_ALLOW {
		t.Errorf("explain after restore = %v, want allow", why)
	}

	// An invalid policy is refused; the running one stays.
	before := srv.Ctl("policy", "get")
	bad := filepath.Join(t.TempDir(), "bad.yaml")
	writeFile(t, bad, strings.Replace(scenario.Policy(port, fmt.Sprintf(threatIntelResponse, evilHash)), "min_level: medium", "min_level: medum", 1))
	out, err := srv.CtlErr("policy", "apply", "-f", bad)
	if err == nil || !strings.Contains(out, "bad.yaml:") {
		t.Errorf("invalid policy applied or error has no position: %v\n%s", err, out)
	}
	if after := srv.Ctl("policy", "get"); after != before {
		t.Errorf("running policy changed after a rejected apply")
	}
	if dialOnce(t, deviceCg, from, crm) != "ok" {
		t.Errorf("access lost after a rejected policy")
	}

	// The record shows every step.
	assertEventsSeen(t, events, []vigilpb.EventKind{
		vigilpb.EventKind_EVENT_KIND_CONNECT, vigilpb.EventKind_EVENT_KIND_EXEC,
		vigilpb.EventKind_EVENT_KIND_FINDING, vigilpb.EventKind_EVENT_KIND_LEVEL,
		vigilpb.EventKind_EVENT_KIND_INSTRUCTION,
	})
}

func freePort(t *testing.T, host string) int {
	t.Helper()
	l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

// waitOutput starts cmd and returns its output lines once want appeared.
func waitOutput(t *testing.T, cmd *exec.Cmd, want string) <-chan string {
	t.Helper()
	pipe, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	lines := make(chan string, 64)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(pipe)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	waitLine(t, lines, want, 10*time.Second)
	return lines
}

func waitLine(t *testing.T, lines <-chan string, want string, timeout time.Duration) {
	t.Helper()
	deadline := time.After(timeout)
	for {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("output ended before %q", want)
			}
			if strings.HasPrefix(l, want) {
				return
			}
		case <-deadline:
			t.Fatalf("no %q within %s", want, timeout)
		}
	}
}

func requireKilled(t *testing.T, err error) {
	t.Helper()
	if !harness.KilledBySIGKILL(err) {
		t.Fatalf("process ended with %v, want SIGKILL", err)
	}
}

// assertIngressRefused connects to the service from the device's address
// in a cgroup no agent governs: only the service host's ingress table can
// refuse it.
func assertIngressRefused(t *testing.T, crm string) {
	t.Helper()
	outside := testenv.NewCgroup(t)
	got := dialOnce(t, outside, net.JoinHostPort(deviceAddr, "0"), crm)
	if got == "ok" {
		t.Errorf("service host admitted a refused device's address")
	}
}

func explain(t *testing.T, srv *harness.Server, agent, dest string) *vigilpb.ExplainResponse {
	t.Helper()
	out := srv.Ctl("explain", "--agent", agent, "--pid", "0", "--dest", dest, "-o", "json")
	var resp vigilpb.ExplainResponse
	if err := protojson.Unmarshal([]byte(out), &resp); err != nil {
		t.Fatalf("decode explain: %v\n%s", err, out)
	}
	return &resp
}

// assertEventsSeen drains the live event stream and checks every kind in
// want was followed.
func assertEventsSeen(t *testing.T, events <-chan string, want []vigilpb.EventKind) {
	t.Helper()
	seen := map[vigilpb.EventKind]bool{}
	deadline := time.After(10 * time.Second)
	for len(seen) < len(want) {
		select {
		case line, ok := <-events:
			if !ok {
				t.Fatalf("event stream ended; saw %v", seen)
			}
			var ev vigilpb.Event
			if err := protojson.Unmarshal([]byte(line), &ev); err != nil {
				t.Fatalf("decode event: %v: %s", err, line)
			}
			for _, k := range want {
				if ev.GetKind() == k {
					seen[k] = true
				}
			}
		case <-deadline:
			t.Fatalf("followed events lack some of %v; saw %v", want, seen)
		}
	}
}
