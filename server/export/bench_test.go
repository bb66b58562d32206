package export

import (
	"context"
	"encoding/json"
	"testing"
)

// BenchmarkPublishStuckSink measures Publish while the only sink never
// drains: the cost enforcement pays per event when an export target hangs.
func BenchmarkPublishStuckSink(b *testing.B) {
	stuck := &stuckSink{entered: make(chan struct{})}
	e, err := New(quiet(), Options{Queue: 16}, stuck)
	if err != nil {
		b.Fatal(err)
	}
	ev := events(1)[0]
	b.ReportAllocs()
	for b.Loop() {
		e.Publish(ev)
	}
	b.StopTimer()
	e.cancel()
	if err := e.Close(context.Background()); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkMap measures the OCSF conversion and JSON encoding of one event.
func BenchmarkMap(b *testing.B) {
	ev := events(1)[0]
	m := Mapper{}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := json.Marshal(m.Map(ev)); err != nil {
			b.Fatal(err)
		}
	}
}
