package api

import (
	"testing"
	"time"
)

func TestBucket(t *testing.T) {
	now := time.Now()
	b := &bucket{rate: 10, burst: 2, tokens: 2, last: now}
	steps := []struct {
		name     string
		at       time.Duration
		wantWait time.Duration
	}{
		{name: "burst 1", at: 0, wantWait: 0},
		{name: "burst 2", at: 0, wantWait: 0},
		{name: "over the burst waits one token", at: 0, wantWait: 100 * time.Millisecond},
		{name: "refilled later", at: 300 * time.Millisecond, wantWait: 0},
	}
	for _, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			got := b.reserve(now.Add(s.at))
			if got < s.wantWait-time.Millisecond || got > s.wantWait+time.Millisecond {
				t.Fatalf("wait %v, want %v", got, s.wantWait)
			}
		})
	}
}

func TestKeyedLimiter(t *testing.T) {
	l := newKeyedLimiter(0.001, 2, 2)
	l.charge("a")
	l.charge("a")
	if !l.blocked("a") {
		t.Fatal("a not blocked after spending its burst")
	}
	if l.blocked("b") {
		t.Fatal("b blocked by a's failures")
	}
	l.get("c") // a third key forgets the others
	if l.blocked("a") {
		t.Fatal("limiter kept more keys than its bound")
	}
}
