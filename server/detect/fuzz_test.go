package detect

import (
	"os"
	"testing"

	"google.golang.org/protobuf/proto"

	vigilpb "github.com/vigilsec/vigil/gen/vigil/v1"
	"github.com/vigilsec/vigil/policy"
)

// FuzzAgentEvents feeds the detectors event batches as a hostile agent could
// send them: any field empty, huge or inconsistent. Detection must neither
// panic nor produce a finding that names no entity, detector or severity.
func FuzzAgentEvents(f *testing.F) {
	for _, batch := range seedBatches() {
		b, err := proto.Marshal(batch)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	src, err := os.ReadFile("../../examples/policy.yaml")
	if err != nil {
		f.Fatal(err)
	}
	p, errs := policy.Parse("policy.yaml", src)
	if len(errs) > 0 {
		f.Fatalf("example policy: %v", errs)
	}

	f.Fuzz(func(t *testing.T, data []byte) {
		var batch vigilpb.EventBatch
		if proto.Unmarshal(data, &batch) != nil {
			return
		}
		s := NewState()
		s.SetPolicy(p)
		for _, ev := range batch.GetEvents() {
			for _, f := range s.Event("fuzz", ev) {
				if f.Entity == "" || f.Detector == "" || f.Severity == "" {
					t.Fatalf("incomplete finding %+v from %v", f, ev)
				}
			}
		}
	})
}

// seedBatches are realistic batches: an exec from a writable directory, a
// shell under a service, connects, an exit and a loss report.
func seedBatches() []*vigilpb.EventBatch {
	shell := &vigilpb.Process{Pid: 42, StartTimeNs: 7, Ppid: 1, Executable: "/bin/sh", Comm: "sh",
		Args: []string{"sh", "-c", "id"}, ParentExecutable: "/usr/sbin/nginx", Sha256: "ab"}
	tmp := &vigilpb.Process{Pid: 43, Executable: "/tmp/x", Comm: "x", Uid: 1000}
	conn := &vigilpb.Connection{Protocol: vigilpb.Protocol_PROTOCOL_TCP, RemoteAddress: "198.51.100.7",
		RemotePort: 443, Verdict: vigilpb.Verdict_VERDICT_DENY}
	return []*vigilpb.EventBatch{
		{Events: []*vigilpb.Event{
			{Seq: 1, Kind: vigilpb.EventKind_EVENT_KIND_EXEC, Process: shell},
			{Seq: 2, Kind: vigilpb.EventKind_EVENT_KIND_EXEC, Process: tmp},
			{Seq: 3, Kind: vigilpb.EventKind_EVENT_KIND_CONNECT, Process: tmp, Connection: conn},
			{Seq: 4, Kind: vigilpb.EventKind_EVENT_KIND_EXIT, Process: tmp, Signal: 9},
		}},
		{Events: []*vigilpb.Event{
			{Seq: 5, Kind: vigilpb.EventKind_EVENT_KIND_LOSS, Lost: 1 << 40},
			{Seq: 6, Kind: vigilpb.EventKind_EVENT_KIND_ACCEPT, Connection: &vigilpb.Connection{Inbound: true}},
		}},
	}
}
