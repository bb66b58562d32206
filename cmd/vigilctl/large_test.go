package main

import (
	"strings"
	"testing"

	vigilpb "github.com/vigilsec/vigil/gen/vigil/v1"
)

// A query the server may answer (up to its 16 MiB message bound) must not
// be refused by vigilctl's smaller default receive limit.
func TestEventsReplyLargerThanGRPCDefault(t *testing.T) {
	fx := newFixture(t)
	msg := strings.Repeat("x", 1000)
	fx.fake.events = nil
	for range 6000 {
		fx.fake.events = append(fx.fake.events, &vigilpb.Event{Kind: vigilpb.EventKind_EVENT_KIND_POLICY, Message: msg})
	}
	r := fx.ctl(t, "events", "--limit", "6000", "-o", "json")
	if r.code != exitOK {
		t.Fatalf("6 MB reply: %s", r.stderr)
	}
	if n := strings.Count(r.stdout, "\n"); n != 6000 {
		t.Fatalf("printed %d events, want 6000", n)
	}
}
