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

// floodConnects is how many denied connects the flood makes: nearly three
// times what the default 8 MiB ring buffer holds (about 160 bytes a record).
const floodConnects = 150000

func TestRingBufferFloodIsCountedReportedAndLowersTrust(t *testing.T) {
	testenv.RequireRoot(t)
	s := harness.StartServer(t)
	denied := listen(t, 1)[0]
	apply(t, s, denyPolicy(t, "", denied))
	cg := testenv.NewCgroup(t)
	a := s.StartAgent(t, "flooded", cg)
	if row := agentRow(t, s, a.Name); row.Level != "medium" || row.EventsLost != 0 {
		t.Fatalf("before the flood: level %s, %d lost", row.Level, row.EventsLost)
	}

	// With the agent paused nothing drains the ring, so the flood overflows it.
	if err := a.Proc.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	fl := workload(t, cg, "", "flood", denied, fmt.Sprint(floodConnects))
	out, err := fl.CombinedOutput()
	a.Proc.Signal(syscall.SIGCONT)
	var refused int
	if _, serr := fmt.Sscanf(strings.TrimSpace(string(out)), "refused %d", &refused); err != nil || serr != nil {
		t.Fatalf("flood: %v %v: %s", err, serr, out)
	}
	if refused != floodConnects {
		t.Errorf("flood: %d of %d connects refused", refused, floodConnects)
	}

	// The loss is reported and the policy's blind-spot rule lowers the device.
	var row agentState
	defer func() {
		if t.Failed() {
			v, _ := connectTally(events(t, s, a.Name), fl.Process.Pid, denied)
			t.Logf("last agent row: %+v; stored flood events %v", row, v)
		}
	}()
	harness.WaitFor(t, 30*time.Second, "the loss reported and the device lowered", func() bool {
		row = agentRow(t, s, a.Name)
		return row.EventsLost > 0 && row.Level == "low"
	})
	lost := agentRow(t, s, a.Name).EventsLost
	var stored, findings int
	harness.WaitFor(t, 30*time.Second, "every delivered flood event stored", func() bool {
		evs := events(t, s, a.Name)
		v, _ := connectTally(evs, fl.Process.Pid, denied)
		stored, findings = v["DENY"], 0
		for _, ev := range events(t, s, "", "finding") {
			if ev.Finding.Detector == "event-loss" && ev.Finding.Entity == "device/"+a.Name {
				findings++
			}
		}
		return uint64(stored)+lost >= uint64(refused) && findings > 0
	})
	t.Logf("flood of %d connects: %d stored, %d counted lost, %d event-loss findings",
		refused, stored, lost, findings)
	// Every connect was either delivered or counted; the only other events
	// of the flood process the ring could drop are its exec and exit.
	if extra := uint64(stored) + lost - uint64(refused); extra > 2 {
		t.Errorf("%d stored + %d lost exceeds the %d connects by %d", stored, lost, refused, extra)
	}
}
