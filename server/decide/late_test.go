package decide

import (
	"context"
	"testing"
	"time"

	vigilpb "github.com/vigilsec/vigil/gen/vigil/v1"
)

// TestLateEventStaysUnderNewerReport checks that a hit observed before a
// report, but ingested after it, does not undo the report.
func TestLateEventStaysUnderNewerReport(t *testing.T) {
	f := newFixture(t)
	f.execBad(7)
	equal(t, "level after hit", f.e.Level("device/laptop"), "low")

	observed := f.clock.Now()
	f.clock.advance(time.Second)
	if _, err := f.e.Report(context.Background(), &vigilpb.ReportRequest{Entity: "device/laptop",
		Level: "high", Source: "edr", Reason: "cleaned"}); err != nil {
		t.Fatal(err)
	}
	equal(t, "level after report", f.e.Level("device/laptop"), "high")

	f.clock.advance(time.Second)
	err := f.e.Ingest(context.Background(), "laptop", []*vigilpb.Event{{Seq: 2,
		Kind: vigilpb.EventKind_EVENT_KIND_EXEC, TimeUnixNano: observed.UnixNano(),
		Process: &vigilpb.Process{Pid: 8, StartTimeNs: 100, Ppid: 1, Uid: 1000, User: "alice",
			Executable: "/opt/bad", Sha256: hashX}}})
	if err != nil {
		t.Fatal(err)
	}
	equal(t, "level after a late hit", f.e.Level("device/laptop"), "high")
}
