//go:build integration

package integrate

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	vigilpb "github.com/vigilsec/vigil/gen/vigil/v1"
	"github.com/vigilsec/vigil/internal/testenv"
	"github.com/vigilsec/vigil/tests/harness"
)

// stixBundle is a STIX 2.1 bundle with one file-hash indicator.
const stixBundle = `{
  "type": "bundle",
  "id": "bundle--5d0092c5-5f74-4287-9642-33f4c354e56d",
  "objects": [
    {
      "type": "indicator",
      "spec_version": "2.1",
      "id": "indicator--8e2e2d2b-17d4-4cbf-938f-98ee46b3cd3f",
      "created": "2026-01-01T00:00:00.000Z",
      "modified": "2026-01-01T00:00:00.000Z",
      "name": "evil tee",
      "indicator_types": ["malicious-activity"],
      "pattern": "[file:hashes.'SHA-256' = '%s']",
      "pattern_type": "stix",
      "valid_from": "2026-01-01T00:00:00Z",
      "confidence": 90
    }
  ]
}
`

// TestFeedHashKillsAtExec gives the server a STIX feed naming a binary's
// hash. Its first run inside the protected cgroup is killed by instruction;
// every later run is killed at exec, before it writes anything.
func TestFeedHashKillsAtExec(t *testing.T) {
	testenv.RequireRoot(t)
	evil, hash := harness.UniqueBinary(t, "/usr/bin/tee")
	feed := filepath.Join(t.TempDir(), "bundle.json")
	writeFile(t, feed, fmt.Sprintf(stixBundle, hash), 0o600)
	srv := harness.StartServerIn(t, "", harness.FreeAddr(t), "--intel-feed", "stix-test="+feed+",stix")
	applyPolicy(t, srv)
	cg := testenv.NewCgroup(t)
	srv.StartAgent(t, "intel-host", cg)

	// First run: tee waits on its open stdin and is killed when the
	// threat-intel finding reaches the agent.
	marker := filepath.Join(t.TempDir(), "marker")
	first := cg.Command(t, evil, marker)
	stdin, err := first.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	defer stdin.Close()
	if err := first.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	started := time.Now()
	go func() { done <- first.Wait() }()
	select {
	case err := <-done:
		if !harness.KilledBySIGKILL(err) {
			t.Fatalf("first run ended with %v, want SIGKILL", err)
		}
		t.Logf("first run killed %v after start", time.Since(started).Round(time.Millisecond))
	case <-time.After(15 * time.Second):
		t.Fatal("first run still alive 15s after exec")
	}

	// Later runs die at exec: the marker they would create never appears.
	// The kill-on-exec entry reaches the kernel shortly after the kill.
	killedAt := waitKilledAtExec(t, cg, evil, marker)
	t.Logf("a later run first killed at exec %v after the first start", time.Since(started).Round(time.Millisecond))
	for range 3 {
		killedAt = append(killedAt, runOnce(t, cg, evil, marker))
	}

	// The record: the finding on the process, the kill instruction, and
	// the exits by SIGKILL.
	requireRecorded(t, srv, hash, first.Process.Pid, killedAt)
	if os.Getenv("VIGIL_INTEGRATE_DUMP") != "" {
		t.Log(srv.Ctl("events", "-o", "json", "--kind", "finding", "--kind", "instruction", "--kind", "exit"))
	}
}

// waitKilledAtExec runs evil until the kernel kills it at exec, allowing
// runs that end normally only while the kill-on-exec entry propagates.
func waitKilledAtExec(t *testing.T, cg *testenv.Cgroup, evil, marker string) []int {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		os.Remove(marker)
		cmd := cg.Command(t, evil, marker)
		err := cmd.Run()
		if harness.KilledBySIGKILL(err) {
			if _, statErr := os.Stat(marker); statErr == nil {
				t.Fatal("a run killed by SIGKILL created its marker: killed after exec, not at it")
			}
			return []int{cmd.Process.Pid}
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatal("no run of the flagged binary was killed at exec within 10s")
	return nil
}

// runOnce runs evil once with stdin at EOF and requires it to be killed at
// exec without creating marker. It returns the pid.
func runOnce(t *testing.T, cg *testenv.Cgroup, evil, marker string) int {
	t.Helper()
	os.Remove(marker)
	cmd := cg.Command(t, evil, marker)
	if err := cmd.Run(); !harness.KilledBySIGKILL(err) {
		t.Fatalf("run of the flagged binary ended with %v, want SIGKILL", err)
	}
	if _, err := os.Stat(marker); err == nil {
		t.Fatal("a killed run created its marker")
	}
	return cmd.Process.Pid
}

// requireRecorded checks vigilctl events for the threat-intel finding on
// the first run, a kill instruction, and SIGKILL exits of the later runs.
func requireRecorded(t *testing.T, srv *harness.Server, hash string, firstPid int, killedAt []int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		missing := missingRecord(t, srv, hash, firstPid, killedAt)
		if missing == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("vigilctl events lacks the %s after 10s", missing)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// missingRecord names the first expected record vigilctl events lacks, or
// returns "".
func missingRecord(t *testing.T, srv *harness.Server, hash string, firstPid int, killedAt []int) string {
	var finding, kill bool
	exits := map[int]uint32{}
	for _, ev := range storedEvents(t, srv, "finding", "instruction", "exit") {
		switch ev.GetKind() {
		case vigilpb.EventKind_EVENT_KIND_FINDING:
			f := ev.GetFinding()
			finding = finding || (f.GetDetector() == "threat-intel" && f.GetSource() == "stix-test" &&
				ev.GetProcess().GetSha256() == hash && int(ev.GetProcess().GetPid()) == firstPid)
		case vigilpb.EventKind_EVENT_KIND_INSTRUCTION:
			kill = kill || (ev.GetAgent() == "intel-host" || strings.Contains(ev.GetEntity(), "intel-host")) &&
				strings.Contains(strings.ToLower(ev.GetMessage()), "kill")
		case vigilpb.EventKind_EVENT_KIND_EXIT:
			exits[int(ev.GetProcess().GetPid())] = ev.GetSignal()
		}
	}
	switch {
	case !finding:
		return "threat-intel finding"
	case !kill:
		return "kill instruction"
	case exits[firstPid] != 9:
		return fmt.Sprintf("SIGKILL exit of the first run (pid %d)", firstPid)
	}
	for _, pid := range killedAt {
		if exits[pid] != 9 {
			return fmt.Sprintf("SIGKILL exit of pid %d", pid)
		}
	}
	return ""
}
