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
	metrics := harness.FreeAddr(t)
	s := harness.StartServerIn(t, "", harness.FreeAddr(t), "--metrics", metrics)
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
			t.Logf("last agent row: %+v; connects stored %d", row,
				metric(t, metrics, "vigil_server_events_stored_total", `kind="EVENT_KIND_CONNECT"`))
		}
	}()
	// The report follows the delivered part of the flood on the agent's
	// stream, so it waits for the server to store those first.
	resumed := time.Now()
	harness.WaitFor(t, 90*time.Second, "the loss reported and the device lowered", func() bool {
		row = agentRow(t, s, a.Name)
		return row.EventsLost > 0 && row.Level == "low"
	})
	reported := time.Since(resumed)

	// Every connect was either stored or counted lost. The server stores
	// each event once, so its count of stored connects is the flood's
	// delivered part (no other process of the scope connects).
	var stored, lost uint64
	harness.WaitFor(t, 30*time.Second, "every delivered flood event stored", func() bool {
		stored = metric(t, metrics, "vigil_server_events_stored_total", `kind="EVENT_KIND_CONNECT"`)
		lost = agentRow(t, s, a.Name).EventsLost
		return stored+lost >= uint64(refused)
	})
	findings := 0
	for _, ev := range events(t, s, "", "finding") {
		if ev.Finding.Detector == "event-loss" && ev.Finding.Entity == "device/"+a.Name {
			findings++
		}
	}
	t.Logf("flood of %d connects: %d stored, %d counted lost, %d event-loss findings; reported after %s",
		refused, stored, lost, findings, reported.Round(time.Millisecond))
	if findings == 0 {
		t.Error("no event-loss finding for the device")
	}
	// The only other events of the flood process the ring could drop are
	// its exec and exit.
	if extra := stored + lost - uint64(refused); extra > 2 {
		t.Errorf("%d stored + %d lost exceeds the %d connects by %d", stored, lost, refused, extra)
	}
}
