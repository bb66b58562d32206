package detect

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	vigilpb "github.com/vigilsec/vigil/gen/vigil/v1"
	"github.com/vigilsec/vigil/policy"
)

const hashX = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"

func newState(t *testing.T) *State {
	t.Helper()
	p, errs := policy.Parse("p.yaml", []byte(`
version: 1
levels: [low, high]
defaults: {level: high, traffic: allow, unknown_peers: deny}
indicators:
  - {id: bin-x, sha256: `+hashX+`}
  - {id: c2, cidr: 203.0.113.0/24}
posture:
  - {name: kernel, agents: ["*"], kernel_min: "6.1", forbidden_ports: ["tcp:23"], severity: high}
detectors: {scan_count: 3, scan_window: 10s}
`))
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	s := NewState()
	s.SetPolicy(p)
	return s
}

func proc(pid, ppid, uid uint32, exe string) *vigilpb.Process {
	return &vigilpb.Process{Pid: pid, Ppid: ppid, Uid: uid, Executable: exe, StartTimeNs: uint64(pid) * 1000}
}

func exec(p *vigilpb.Process) *vigilpb.Event {
	return &vigilpb.Event{Kind: vigilpb.EventKind_EVENT_KIND_EXEC, Process: p, TimeUnixNano: 1}
}

func connect(p *vigilpb.Process, dst string, v vigilpb.Verdict, inbound bool, sec int64) *vigilpb.Event {
	kind := vigilpb.EventKind_EVENT_KIND_CONNECT
	if inbound {
		kind = vigilpb.EventKind_EVENT_KIND_ACCEPT
	}
	return &vigilpb.Event{Kind: kind, Process: p, TimeUnixNano: sec * 1e9, Connection: &vigilpb.Connection{
		RemoteAddress: dst, RemotePort: 80, Verdict: v, Inbound: inbound}}
}

// summary renders findings as "detector entity" lines.
func summary(fs []Finding) string {
	var out []string
	for _, f := range fs {
		out = append(out, f.Detector+" "+f.Entity)
	}
	return strings.Join(out, "\n")
}

func TestEventDetectors(t *testing.T) {
	allow, deny := vigilpb.Verdict_VERDICT_ALLOW, vigilpb.Verdict_VERDICT_DENY
	shell := proc(30, 20, 33, "/usr/bin/bash")
	hashed := proc(11, 1, 1000, "/opt/x")
	hashed.Sha256 = strings.ToUpper(hashX)
	tests := []struct {
		name   string
		events []*vigilpb.Event
		want   string // findings of the last event
	}{
		{"hash hit on process and device", []*vigilpb.Event{exec(hashed)},
			"threat-intel process/a/11@11000\nthreat-intel device/a"},
		{"unknown hash", []*vigilpb.Event{exec(proc(11, 1, 1000, "/opt/y"))}, ""},
		{"exec from tmp", []*vigilpb.Event{exec(proc(12, 1, 1000, "/tmp/x"))}, "exec-writable-dir process/a/12@12000"},
		{"exec from memfd", []*vigilpb.Event{exec(proc(12, 1, 1000, "memfd:payload"))}, "exec-writable-dir process/a/12@12000"},
		{"shell from a service that accepted", []*vigilpb.Event{
			exec(proc(20, 1, 33, "/usr/sbin/nginx")),
			connect(proc(20, 1, 33, "/usr/sbin/nginx"), "10.0.0.9", allow, true, 1),
			exec(shell)}, "shell-from-service process/a/30@30000"},
		{"shell from a process that never accepted", []*vigilpb.Event{
			exec(proc(20, 1, 1000, "/usr/bin/tmux2")), exec(shell)}, ""},
		{"shell from sshd is normal", []*vigilpb.Event{
			exec(proc(20, 1, 0, "/usr/sbin/sshd")),
			connect(proc(20, 1, 0, "/usr/sbin/sshd"), "10.0.0.9", allow, true, 1),
			exec(proc(30, 20, 0, "/usr/bin/bash"))}, ""},
		{"root child of user parent", []*vigilpb.Event{
			exec(proc(40, 1, 1000, "/home/u/exploit")), exec(proc(41, 40, 0, "/usr/bin/id"))},
			"privilege-gain process/a/41@41000"},
		{"root child of sudo", []*vigilpb.Event{
			exec(proc(40, 1, 1000, "/usr/bin/sudo")), exec(proc(41, 40, 0, "/usr/bin/id"))}, ""},
		{"connect to c2", []*vigilpb.Event{connect(proc(50, 1, 1000, "/usr/bin/curl"), "::ffff:203.0.113.7", allow, false, 1)},
			"threat-intel process/a/50@50000\nthreat-intel device/a"},
		{"burst of refusals", []*vigilpb.Event{
			connect(nil, "10.0.0.1", deny, false, 1), connect(nil, "10.0.0.2", deny, false, 2),
			connect(nil, "10.0.0.3", deny, false, 3)}, "connect-burst device/a"},
		{"refusals spread out", []*vigilpb.Event{
			connect(nil, "10.0.0.1", deny, false, 1), connect(nil, "10.0.0.2", deny, false, 12),
			connect(nil, "10.0.0.3", deny, false, 23)}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newState(t)
			var got []Finding
			for _, ev := range tt.events {
				got = s.Event("a", ev)
			}
			if summary(got) != tt.want {
				t.Errorf("findings:\n%s\nwant:\n%s", summary(got), tt.want)
			}
		})
	}
}

func TestFeedIndicators(t *testing.T) {
	s := newState(t)
	s.SetFeed("osint", []policy.Indicator{{Kind: policy.IndicatorIP, Prefix: netip.MustParsePrefix("198.51.100.0/24"),
		ID: "ind-7", Source: "osint"}})
	fs := s.Event("a", connect(proc(1, 0, 0, "/bin/x"), "198.51.100.1", vigilpb.Verdict_VERDICT_ALLOW, false, 1))
	if len(fs) != 2 || fs[1].Source != "osint" || !strings.Contains(fs[1].Reason, "ind-7") {
		t.Fatalf("findings = %+v", fs)
	}
	s.SetFeed("osint", nil)
	if fs := s.Event("a", connect(proc(1, 0, 0, "/bin/x"), "198.51.100.1", vigilpb.Verdict_VERDICT_ALLOW, false, 2)); len(fs) != 0 {
		t.Fatalf("removed feed still hits: %+v", fs)
	}
}

func TestPostureAndCounters(t *testing.T) {
	s := newState(t)
	now := time.Now()
	good := &vigilpb.Posture{HostId: "h1", KernelVersion: "6.18.0", Hardware: "cpu"}
	bad := &vigilpb.Posture{HostId: "h1", KernelVersion: "5.10.0", Hardware: "cpu", Listening: []string{"tcp:23"}}
	tests := []struct {
		name string
		run  func() []Finding
		want string
	}{
		{"compliant first report", func() []Finding { return s.Posture("a", good, now) }, ""},
		{"kernel downgrade", func() []Finding { return s.Posture("a", bad, now) }, "fingerprint-change device/a\nposture device/a"},
		{"same violation again", func() []Finding { return s.Posture("a", bad, now) }, ""},
		{"first loss", func() []Finding { return s.Counters("a", &vigilpb.Counters{EventsLost: 5}, now) }, "event-loss device/a"},
		{"no new loss", func() []Finding { return s.Counters("a", &vigilpb.Counters{EventsLost: 5}, now) }, ""},
		{"agent restarted", func() []Finding { return s.Counters("a", &vigilpb.Counters{EventsLost: 1}, now) }, ""},
		{"loss after restart", func() []Finding { return s.Counters("a", &vigilpb.Counters{EventsLost: 2}, now) }, "event-loss device/a"},
		{"loss event", func() []Finding {
			return s.Event("a", &vigilpb.Event{Kind: vigilpb.EventKind_EVENT_KIND_LOSS, Lost: 3})
		}, "event-loss device/a"},
		{"counters include the loss event", func() []Finding {
			return s.Counters("a", &vigilpb.Counters{EventsLost: 5}, now)
		}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := summary(tt.run()); got != tt.want {
				t.Errorf("findings:\n%s\nwant:\n%s", got, tt.want)
			}
		})
	}
}
