//go:build integration

package reliability

import (
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vigilsec/vigil/internal/testenv"
	"github.com/vigilsec/vigil/tests/harness"
)

// serverCrashes is how many times the server is killed during ingest.
const serverCrashes = 3

func TestServerKillDuringIngestKeepsEventsAndPolicy(t *testing.T) {
	testenv.RequireRoot(t)
	s := harness.StartServer(t)
	addrs := listen(t, 2)
	denied, allowed := addrs[0], addrs[1]
	version := apply(t, s, denyPolicy(t, "", denied))
	cg := testenv.NewCgroup(t)
	a := s.StartAgent(t, "ingesting", cg)

	l := startLoop(t, cg, "", loopPause, denied, allowed)
	for i := range serverCrashes {
		time.Sleep(700 * time.Millisecond)
		before := events(t, s, "")
		s.Proc.Stop(syscall.SIGKILL)
		time.Sleep(500 * time.Millisecond)
		s.Start()
		s.WaitAgentOnline(t, a.Name)

		// Everything the server had stored (and so acknowledged) survived.
		after := map[string]bool{}
		for _, ev := range events(t, s, "") {
			after[ev.ServerID] = true
		}
		for _, ev := range before {
			if !after[ev.ServerID] {
				t.Fatalf("crash %d: stored event %s (%s seq %d) gone after restart",
					i+1, ev.ServerID, ev.Kind, ev.Seq)
			}
		}
		t.Logf("crash %d: %d events stored before, all present after", i+1, len(before))
	}
	l.stop(t)

	waitAllStored(t, s, a.Name, l, denied, allowed, 0)
	if got := s.Ctl("policy", "get"); !strings.Contains(got, fmt.Sprintf("# version %d ", version)) {
		t.Errorf("running policy after restarts is not version %d:\n%s", version, harness.Tail(got, 5))
	}
}
