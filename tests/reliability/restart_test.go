//go:build integration

package reliability

import (
	"fmt"
	"syscall"
	"testing"
	"time"

	"github.com/vigilsec/vigil/internal/testenv"
	"github.com/vigilsec/vigil/tests/harness"
)

// agentRestarts is how many times the agent is killed with SIGKILL.
const agentRestarts = 20

// policyApplies is how many policies the churn test applies.
const policyApplies = 100

// checkVerdicts fails the test for any wrong verdict the loop saw: a
// connect to denied that was not refused, or one to allowed that was.
func checkVerdicts(t *testing.T, l *loop, denied, allowed string) (refused, passed int) {
	t.Helper()
	d, a := l.outcomes(denied), l.outcomes(allowed)
	if len(d) != 1 || d[outcomeEPERM] == 0 {
		t.Errorf("denied %s: outcomes %v, want only eperm", denied, d)
	}
	if len(a) != 1 || a[outcomeOK] == 0 {
		t.Errorf("allowed %s: outcomes %v, want only ok", allowed, a)
	}
	return d[outcomeEPERM], a[outcomeOK]
}

// waitAllStored waits until the server holds a connect event for every
// attempt the loop reported, to denied (deny) and to allowed (allow), and
// fails for any lost, any (agent, seq) stored twice, and more than
// maxRepeats attempts stored twice under new sequence numbers.
func waitAllStored(t *testing.T, s *harness.Server, agent string, l *loop, denied, allowed string,
	maxRepeats int) {
	t.Helper()
	refused, passed := checkVerdicts(t, l, denied, allowed)
	var dv, av map[string]int
	var dups int
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		evs := events(t, s, agent, "connect")
		dv, dups = connectTally(evs, l.pid(), denied)
		av, _ = connectTally(evs, l.pid(), allowed)
		if dv["DENY"] >= refused && av["ALLOW"] >= passed {
			break
		}
		time.Sleep(250 * time.Millisecond)
	}
	repeats := dv["DENY"] - refused + av["ALLOW"] - passed
	t.Logf("attempts: %d refused, %d passed; stored: denied %v, allowed %v; "+
		"same seq stored twice: %d; stored again under a new seq: %d", refused, passed, dv, av, dups, repeats)
	if dv["DENY"] < refused || len(dv) != 1 {
		t.Errorf("denied connects stored %v, want DENY=%d (lost %d)", dv, refused, refused-dv["DENY"])
	}
	if av["ALLOW"] < passed || len(av) != 1 {
		t.Errorf("allowed connects stored %v, want ALLOW=%d (lost %d)", av, passed, passed-av["ALLOW"])
	}
	if dups != 0 {
		t.Errorf("%d events stored twice under one sequence number", dups)
	}
	if repeats > maxRepeats {
		t.Errorf("%d events stored again, want at most %d", repeats, maxRepeats)
	}
}

func TestAgentKillRestartKeepsEnforcingAndLosesNoEvent(t *testing.T) {
	testenv.RequireRoot(t)
	s := harness.StartServer(t)
	addrs := listen(t, 2)
	denied, allowed := addrs[0], addrs[1]
	apply(t, s, denyPolicy(t, "", denied))
	cg := testenv.NewCgroup(t)
	a := s.StartAgent(t, "restarted", cg)

	l := startLoop(t, cg, "", loopPause, denied, allowed)
	for i := range agentRestarts {
		time.Sleep(100 * time.Millisecond)
		a.Proc.Stop(syscall.SIGKILL)
		time.Sleep(100 * time.Millisecond)
		a.Start()
		s.WaitAgentOnline(t, a.Name)
		if got := l.outcomes(denied)[outcomeOK]; got != 0 {
			t.Fatalf("restart %d: %d connects to the denied destination succeeded", i+1, got)
		}
	}
	l.stop(t)
	t.Logf("agent killed and restarted %d times", agentRestarts)

	// A kill can repeat at most the one event the agent had stored but not
	// yet released from the ring buffer.
	waitAllStored(t, s, a.Name, l, denied, allowed, agentRestarts)
}

func TestPolicyChurnGivesNoWrongVerdict(t *testing.T) {
	testenv.RequireRoot(t)
	s := harness.StartServer(t)
	addrs := listen(t, 2)
	denied, allowed := addrs[0], addrs[1]
	apply(t, s, denyPolicy(t, "", denied))
	cg := testenv.NewCgroup(t)
	a := s.StartAgent(t, "churned", cg)

	// Every policy keeps the two verdicts and changes the rest of the table:
	// a deny for one more port, a different one each time.
	l := startLoop(t, cg, "", time.Millisecond, denied, allowed)
	tables := agentRow(t, s, a.Name).TableVersion
	var first, last uint64
	for i := range policyApplies {
		extra := fmt.Sprintf(`  - name: churn
    action: deny
    subjects:
      - devices: ["*"]
    destinations:
      - cidrs: [127.0.0.%d/32]
        ports: ["%d"]
`, 2+i%200, 20000+i)
		last = apply(t, s, denyPolicy(t, extra, denied))
		if first == 0 {
			first = last
		}
	}
	harness.WaitFor(t, 20*time.Second, "new tables acknowledged", func() bool {
		return agentRow(t, s, a.Name).TableVersion > tables
	})
	time.Sleep(time.Second)
	l.stop(t)
	t.Logf("applied policies v%d..v%d; agent table v%d..v%d", first, last, tables,
		agentRow(t, s, a.Name).TableVersion)

	refused, passed := checkVerdicts(t, l, denied, allowed)
	t.Logf("connects during churn: %d refused, %d passed", refused, passed)
}
