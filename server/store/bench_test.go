package store

import (
	"testing"

	vigilpb "github.com/vigilsec/vigil/gen/vigil/v1"
)

// BenchmarkAppendEvents measures storing one durable (synced) batch of 100
// agent events; ns/op is per batch.
func BenchmarkAppendEvents(b *testing.B) {
	s, err := Open(Options{Dir: b.TempDir()})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	batch := make([]*vigilpb.Event, 100)
	seq := uint64(0)
	b.ResetTimer()
	for b.Loop() {
		for i := range batch {
			seq++
			batch[i] = &vigilpb.Event{Seq: seq, Kind: vigilpb.EventKind_EVENT_KIND_CONNECT,
				Process:    &vigilpb.Process{Pid: 42, Executable: "/usr/bin/curl"},
				Connection: &vigilpb.Connection{RemoteAddress: "10.0.0.1", RemotePort: 443}}
		}
		if _, _, err := s.AppendEvents("a", batch); err != nil {
			b.Fatal(err)
		}
	}
}
