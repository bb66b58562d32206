package evaluate

import (
	"testing"
	"time"

	"github.com/vigilsec/vigil/policy"
)

const doc = `
version: 1
levels: [untrusted, low, medium, high]
defaults: {level: medium, levels: {service: high}, traffic: allow, unknown_peers: deny}
`

func mustPolicy(t *testing.T, src string) *policy.Policy {
	t.Helper()
	p, errs := policy.Parse("p.yaml", []byte(src))
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	return p
}

func TestBookLevels(t *testing.T) {
	t0 := time.Date(2026, 12, 4, 12, 0, 0, 0, time.UTC)
	type step struct {
		at     time.Duration
		ago    time.Duration // how long before it was added the finding happened
		add    *Finding      // nil: expire at this time
		want   string
		change bool
	}
	tests := []struct {
		name  string
		steps []step
	}{
		{"starting level", []step{{at: 0, want: "medium"}}},
		{"finding lowers then expires", []step{
			{at: 0, add: &Finding{Level: "low", Expires: t0.Add(time.Minute)}, want: "low", change: true},
			{at: 30 * time.Second, want: "low"},
			{at: time.Minute, want: "medium", change: true},
		}},
		{"later report raises, earlier finding stays under it", []step{
			{at: 0, add: &Finding{Level: "low", Expires: t0.Add(time.Hour)}, want: "low", change: true},
			{at: time.Second, add: &Finding{Level: "high", Expires: t0.Add(time.Minute)}, want: "high", change: true},
			{at: time.Minute, want: "low", change: true},
		}},
		{"late batch of older events stays under a newer report", []step{
			{at: time.Second, add: &Finding{Level: "high"}, want: "high", change: true},
			{at: 2 * time.Second, ago: 2 * time.Second, add: &Finding{Level: "low"}, want: "high"},
		}},
		{"finding without level changes nothing", []step{
			{at: 0, add: &Finding{Detector: "exec-writable-dir"}, want: "medium"},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := NewBook(mustPolicy(t, doc))
			for i, s := range tt.steps {
				now := t0.Add(s.at)
				var changed bool
				if s.add != nil {
					f := *s.add
					f.Entity, f.At, f.Reason = "device/laptop", now.Add(-s.ago), "step"
					_, changed = b.Add(f)
				} else {
					changes, _ := b.Expire(now)
					changed = len(changes) > 0
				}
				if got := b.Level("device/laptop"); got != s.want || changed != s.change {
					t.Fatalf("step %d: level %s changed %v, want %s %v", i, got, changed, s.want, s.change)
				}
			}
		})
	}
}

func TestBookStartLevelsAndPolicyChange(t *testing.T) {
	now := time.Now()
	b := NewBook(mustPolicy(t, doc))
	if b.Level("service/crm") != "high" || b.Level("user/alice") != "medium" {
		t.Fatalf("start levels: %s %s", b.Level("service/crm"), b.Level("user/alice"))
	}
	b.Add(Finding{Entity: "user/alice", Detector: "report", At: now})
	changes := b.SetPolicy(mustPolicy(t, `
version: 1
levels: [no, yes]
defaults: {level: yes, traffic: allow, unknown_peers: deny}
`), now)
	if len(changes) != 1 || changes[0].To != "yes" || b.Level("user/alice") != "yes" {
		t.Fatalf("changes %+v level %s", changes, b.Level("user/alice"))
	}
}

func TestBookHoldsAndClear(t *testing.T) {
	now := time.Now()
	b := NewBook(mustPolicy(t, doc))
	b.Add(Finding{Entity: "device/d", Deny: true, Quarantine: true, At: now})
	b.Add(Finding{Entity: "device/d", Level: "low", Deny: true, At: now})
	if d, q := b.Holds("device/d"); !d || !q {
		t.Fatalf("holds = %v %v", d, q)
	}
	b.Add(Finding{Entity: "device/e", Quarantine: true, At: now, Expires: now.Add(time.Second)})
	if _, released := b.Expire(now.Add(time.Second)); len(released) != 1 || released[0] != "device/e" {
		t.Fatalf("released = %v", released)
	}
	b.Clear("device/d", now)
	if d, q := b.Holds("device/d"); d || q || b.Level("device/d") != "low" {
		t.Fatalf("after clear: holds %v %v level %s", d, q, b.Level("device/d"))
	}
}
