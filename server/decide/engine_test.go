package decide

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/vigilsec/vigil/server/store"

	vigilpb "github.com/vigilsec/vigil/gen/vigil/v1"
	"github.com/vigilsec/vigil/policy"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden from the current output")

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const hashX = "abababababababababababababababababababababababababababababababab"

// The server's store provides the engine's KV.
var _ KV = (*store.Namespace)(nil)

// memKV is an in-memory KV.
type memKV struct {
	mu sync.Mutex
	m  map[string][]byte // guarded by mu
}

func newMemKV() *memKV { return &memKV{m: map[string][]byte{}} }

func (k *memKV) Get(key []byte) ([]byte, bool, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	v, ok := k.m[string(key)]
	return bytes.Clone(v), ok, nil
}

func (k *memKV) Set(key, value []byte) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.m[string(key)] = bytes.Clone(value)
	return nil
}

func (k *memKV) Delete(key []byte) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	delete(k.m, string(key))
	return nil
}

func (k *memKV) Scan(prefix []byte, fn func(key, value []byte) error) error {
	k.mu.Lock()
	var keys []string
	for key := range k.m {
		if strings.HasPrefix(key, string(prefix)) {
			keys = append(keys, key)
		}
	}
	sort.Strings(keys)
	k.mu.Unlock()
	for _, key := range keys {
		v, _, _ := k.Get([]byte(key))
		if err := fn([]byte(key), v); err != nil {
			return err
		}
	}
	return nil
}

// recSink records what the engine pushes.
type recSink struct {
	mu     sync.Mutex
	diffs  map[string][]*vigilpb.TableDiff   // guarded by mu
	instrs map[string][]*vigilpb.Instruction // guarded by mu
	events []*vigilpb.Event                  // guarded by mu
	seq    map[string]uint64                 // guarded by mu
}

func newRecSink() *recSink {
	return &recSink{diffs: map[string][]*vigilpb.TableDiff{}, instrs: map[string][]*vigilpb.Instruction{},
		seq: map[string]uint64{}}
}

func (s *recSink) PushDiff(agent string, d *vigilpb.TableDiff) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.diffs[agent] = append(s.diffs[agent], d)
}

func (s *recSink) PushInstruction(agent string, ins *vigilpb.Instruction) (uint64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.seq[agent]++
	ins.Seq = s.seq[agent]
	s.instrs[agent] = append(s.instrs[agent], ins)
	return ins.Seq, nil
}

func (s *recSink) Record(ev *vigilpb.Event) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.events = append(s.events, ev)
}

// take returns and forgets the instructions pushed to agent, as text.
func (s *recSink) take(agent string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for _, ins := range s.instrs[agent] {
		out = append(out, describe(ins))
	}
	s.instrs[agent] = nil
	return out
}

func (s *recSink) kinds() map[vigilpb.EventKind]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[vigilpb.EventKind]int{}
	for _, ev := range s.events {
		out[ev.Kind]++
	}
	return out
}

// clock is a settable time source.
type clock struct {
	mu  sync.Mutex
	now time.Time // guarded by mu
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

type fixture struct {
	t     *testing.T
	kv    *memKV
	sink  *recSink
	clock *clock
	e     *Engine
}

func newFixture(t *testing.T) *fixture {
	f := &fixture{t: t, kv: newMemKV(), sink: newRecSink(),
		clock: &clock{now: time.Date(2026, 12, 4, 12, 0, 0, 0, time.UTC)}}
	f.reopen()
	src, err := os.ReadFile("testdata/scenario.yaml")
	if err != nil {
		t.Fatal(err)
	}
	v, perrs, err := f.e.ApplyPolicy(context.Background(), &vigilpb.PolicyDocument{Filename: "scenario.yaml", Yaml: string(src)}, "admin")
	if err != nil || len(perrs) > 0 || v != 1 {
		t.Fatalf("apply: version %d errors %v %v", v, perrs, err)
	}
	f.online("crm-host", "10.2.0.1")
	f.online("laptop", "10.1.0.2")
	return f
}

func (f *fixture) reopen() {
	e, err := New(Config{KV: f.kv, Sink: f.sink, Now: f.clock.Now})
	if err != nil {
		f.t.Fatal(err)
	}
	f.e = e
}

func (f *fixture) online(agent, addr string) *vigilpb.VerdictTable {
	t, err := f.e.AgentOnline(context.Background(), agent, &vigilpb.Hello{Name: agent,
		Addresses: []string{addr, "127.0.0.1", "fe80::1"},
		Posture:   &vigilpb.Posture{HostId: agent, KernelVersion: "6.18.0"}})
	if err != nil {
		f.t.Fatal(err)
	}
	return t
}

func (f *fixture) table(agent string) *vigilpb.VerdictTable {
	f.e.mu.Lock()
	defer f.e.mu.Unlock()
	return f.e.agents[agent].Table
}

func (f *fixture) egress(agent, dst string, port uint16) vigilpb.Verdict {
	resp, err := f.e.Explain(&vigilpb.ExplainRequest{Agent: agent, Destination: fmt.Sprintf("%s:%d", dst, port)})
	if err != nil {
		f.t.Fatal(err)
	}
	return resp.Verdict
}

func ingressVerdict(t *vigilpb.VerdictTable, peer string) vigilpb.Verdict {
	for _, e := range t.Ingress {
		if e.Peer == peer {
			return e.Verdict
		}
	}
	return vigilpb.Verdict_VERDICT_UNSPECIFIED
}

func (f *fixture) execBad(pid uint32) {
	err := f.e.Ingest(context.Background(), "laptop", []*vigilpb.Event{{Seq: 1, Kind: vigilpb.EventKind_EVENT_KIND_EXEC,
		Process: &vigilpb.Process{Pid: pid, StartTimeNs: 99, Ppid: 1, Uid: 1000, User: "alice",
			Executable: "/opt/bad", Sha256: hashX}}})
	if err != nil {
		f.t.Fatal(err)
	}
}

func equal(t *testing.T, what string, got, want any) {
	t.Helper()
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("%s = %v, want %v", what, got, want)
	}
}

func TestScenarioLowerCutRestore(t *testing.T) {
	allow, deny := vigilpb.Verdict_VERDICT_ALLOW, vigilpb.Verdict_VERDICT_DENY
	f := newFixture(t)
	equal(t, "laptop -> crm before", f.egress("laptop", "10.2.0.1", 8080), allow)
	equal(t, "crm-host admits laptop", ingressVerdict(f.table("crm-host"), "10.1.0.2/32"), allow)
	equal(t, "loopback kept out of tables", ingressVerdict(f.table("crm-host"), "127.0.0.1/32"), vigilpb.Verdict_VERDICT_UNSPECIFIED)
	equal(t, "kill-on-exec armed", f.table("laptop").KillOnExec, []string{hashX})
	laptopV, hostV := f.table("laptop").Version, f.table("crm-host").Version
	f.sink.take("laptop")
	f.sink.take("crm-host")

	f.execBad(4242)
	equal(t, "device level", f.e.Level("device/laptop"), "low")
	equal(t, "laptop -> crm after", f.egress("laptop", "10.2.0.1", 8080), deny)
	equal(t, "crm-host admits laptop after", ingressVerdict(f.table("crm-host"), "10.1.0.2/32"), deny)
	equal(t, "laptop instructions", f.sink.take("laptop"), []string{"kill tree 4242@99", "cut 10.2.0.1:8080"})
	equal(t, "crm-host instructions", f.sink.take("crm-host"), []string{"cut 10.1.0.2"})
	equal(t, "laptop cut peers", f.table("laptop").CutPeers, []string{"10.2.0.1:8080"})
	equal(t, "laptop version", f.table("laptop").Version, laptopV+1)
	equal(t, "crm-host version", f.table("crm-host").Version, hostV+1)
	d := f.sink.diffs["laptop"][len(f.sink.diffs["laptop"])-1]
	equal(t, "laptop diff versions", []uint64{d.BaseVersion, d.Version}, []uint64{laptopV, laptopV + 1})
	equal(t, "laptop diff cut", d.CutPeersAdded, []string{"10.2.0.1:8080"})
	kinds := f.sink.kinds()
	for _, k := range []vigilpb.EventKind{vigilpb.EventKind_EVENT_KIND_FINDING, vigilpb.EventKind_EVENT_KIND_LEVEL,
		vigilpb.EventKind_EVENT_KIND_INSTRUCTION, vigilpb.EventKind_EVENT_KIND_POLICY} {
		if kinds[k] == 0 {
			t.Errorf("no %s event recorded", k)
		}
	}

	resp, err := f.e.Report(context.Background(), &vigilpb.ReportRequest{Entity: "device/laptop", Level: "high",
		Source: "edr", Reason: "cleaned"})
	if err != nil || resp.Level != "high" {
		t.Fatalf("report: %v %v", resp, err)
	}
	equal(t, "laptop -> crm restored", f.egress("laptop", "10.2.0.1", 8080), allow)
	equal(t, "crm-host admits laptop again", ingressVerdict(f.table("crm-host"), "10.1.0.2/32"), allow)
	equal(t, "laptop restore", f.sink.take("laptop"), []string{"restore 10.2.0.1:8080"})
	equal(t, "crm-host restore", f.sink.take("crm-host"), []string{"restore 10.1.0.2"})
	equal(t, "laptop cut peers lifted", len(f.table("laptop").CutPeers), 0)
	equal(t, "crm-host cut peers lifted", len(f.table("crm-host").CutPeers), 0)

	explain := f.explainText("laptop", 4242, "10.2.0.1:8080")
	golden(t, "explain_restored.golden", explain)
}

func (f *fixture) explainText(agent string, pid uint32, dst string) string {
	resp, err := f.e.Explain(&vigilpb.ExplainRequest{Agent: agent, Pid: pid, Destination: dst})
	if err != nil {
		f.t.Fatal(err)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "verdict %s rule %s service %s required %s\n", verdictWord(resp.Verdict), resp.Rule,
		resp.Service, resp.RequiredLevel)
	for _, ent := range sortedKeys(resp.SubjectLevels) {
		fmt.Fprintf(&b, "level %s %s\n", ent, resp.SubjectLevels[ent])
	}
	for _, r := range resp.Reasons {
		b.WriteString("- " + r + "\n")
	}
	return b.String()
}

func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read golden (run with -update): %v", err)
	}
	if got != string(want) {
		t.Errorf("%s differs:\n--- got\n%s--- want\n%s", path, got, want)
	}
}

func TestExplainGolden(t *testing.T) {
	f := newFixture(t)
	f.execBad(4242)
	tests := []struct {
		name  string
		agent string
		pid   uint32
		dst   string
	}{
		{"lowered", "laptop", 4242, "10.2.0.1:8080"},
		{"unknown-process", "laptop", 7, "10.2.0.1:8080"},
		{"uncovered", "crm-host", 0, "192.0.2.1:443"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			golden(t, "explain_"+tt.name+".golden", f.explainText(tt.agent, tt.pid, tt.dst))
		})
	}
}

func TestExpiryRestores(t *testing.T) {
	f := newFixture(t)
	f.execBad(4242)
	f.sink.take("laptop")
	f.clock.advance(9 * time.Minute)
	if err := f.e.Tick(); err != nil {
		t.Fatal(err)
	}
	equal(t, "level before expiry", f.e.Level("device/laptop"), "low")
	f.clock.advance(2 * time.Minute)
	if err := f.e.Tick(); err != nil {
		t.Fatal(err)
	}
	equal(t, "level after expiry", f.e.Level("device/laptop"), "medium")
	equal(t, "restore on expiry", f.sink.take("laptop"), []string{"restore 10.2.0.1:8080"})
	equal(t, "laptop -> crm", f.egress("laptop", "10.2.0.1", 8080), vigilpb.Verdict_VERDICT_ALLOW)
}

func TestQuarantineAndRelease(t *testing.T) {
	f := newFixture(t)
	refused := func(sec int64) *vigilpb.Event {
		return &vigilpb.Event{Kind: vigilpb.EventKind_EVENT_KIND_CONNECT, TimeUnixNano: sec * 1e9,
			Connection: &vigilpb.Connection{RemoteAddress: "10.9.9.9", RemotePort: 22, Verdict: vigilpb.Verdict_VERDICT_DENY}}
	}
	if err := f.e.Ingest(context.Background(), "laptop", []*vigilpb.Event{refused(1), refused(2)}); err != nil {
		t.Fatal(err)
	}
	equal(t, "quarantined", f.table("laptop").Quarantined, true)
	equal(t, "instructions", f.sink.take("laptop"), []string{"INSTRUCTION_KIND_QUARANTINE"})
	f.clock.advance(2 * time.Minute)
	if err := f.e.Tick(); err != nil {
		t.Fatal(err)
	}
	equal(t, "released", f.table("laptop").Quarantined, false)
	equal(t, "instructions", f.sink.take("laptop"), []string{"INSTRUCTION_KIND_RELEASE"})
}

func TestStateSurvivesNew(t *testing.T) {
	f := newFixture(t)
	f.execBad(4242)
	if err := f.e.Cut(context.Background(), "laptop", "10.7.7.7"); err != nil {
		t.Fatal(err)
	}
	f.e.SetIndicators("osint", []policy.Indicator{{Kind: policy.IndicatorSHA256, SHA256: strings.Repeat("c", 64), ID: "i1", Source: "osint"}})
	before := f.table("laptop")
	f.reopen()
	after := f.table("laptop")
	equal(t, "level", f.e.Level("device/laptop"), "low")
	equal(t, "table version", after.Version, before.Version)
	equal(t, "cut peers", after.CutPeers, before.CutPeers)
	hist, err := f.e.PolicyHistory()
	if err != nil || len(hist) != 1 || hist[0].Version != 1 {
		t.Fatalf("history %v %v", hist, err)
	}
	ents, _ := f.e.Entities("device")
	if len(ents) != 2 || ents[1].Name != "device/laptop" || len(ents[1].Findings) == 0 {
		t.Fatalf("entities %v", ents)
	}
	var n int
	f.kv.Scan([]byte(keyHistoryPrefix+"device/laptop/"), func(k, v []byte) error { n++; return nil })
	equal(t, "history records", n, 1)

	f.e.Ingest(context.Background(), "laptop", []*vigilpb.Event{{Kind: vigilpb.EventKind_EVENT_KIND_EXEC,
		Process: &vigilpb.Process{Pid: 5, Executable: "/opt/feed", Sha256: strings.Repeat("c", 64)}}})
	equal(t, "feed hit after restart", f.e.Level("device/laptop"), "low")
	if err := f.e.Restore(context.Background(), "laptop", "10.7.7.7"); err != nil {
		t.Fatal(err)
	}
	equal(t, "admin cut restored", f.table("laptop").CutPeers, []string{"10.2.0.1:8080"})
}

func TestPostureDenyAtHello(t *testing.T) {
	f := newFixture(t)
	tab, err := f.e.AgentOnline(context.Background(), "old-box", &vigilpb.Hello{Addresses: []string{"10.1.0.9"},
		Posture: &vigilpb.Posture{HostId: "old", KernelVersion: "4.19.0"}})
	if err != nil {
		t.Fatal(err)
	}
	equal(t, "old-box table version", tab.Version, 1)
	equal(t, "old-box -> crm", f.egress("old-box", "10.2.0.1", 8080), vigilpb.Verdict_VERDICT_DENY)
	equal(t, "crm-host admits old-box", ingressVerdict(f.table("crm-host"), "10.1.0.9/32"), vigilpb.Verdict_VERDICT_DENY)
	equal(t, "diffs to old-box", len(f.sink.diffs["old-box"]), 0)

	tab, err = f.e.AgentOnline(context.Background(), "old-box", &vigilpb.Hello{Addresses: []string{"10.1.0.9"},
		Posture: &vigilpb.Posture{HostId: "old", KernelVersion: "4.19.0"}})
	if err != nil {
		t.Fatal(err)
	}
	equal(t, "reconnect keeps the version", tab.Version, 1)
}

func TestRejectedPolicyChangesNothing(t *testing.T) {
	f := newFixture(t)
	before := f.table("laptop").Version
	v, errs, err := f.e.ApplyPolicy(context.Background(), &vigilpb.PolicyDocument{Filename: "bad.yaml",
		Yaml: "version: 1\nlevels: [a]\ndefaults: {level: b, traffic: allow, unknown_peers: deny}\n"}, "admin")
	if err != nil || v != 0 || len(errs) == 0 || errs[0].Line != 3 {
		t.Fatalf("apply bad: %d %v %v", v, errs, err)
	}
	p, err := f.e.Policy(0)
	if err != nil || p.Version != 1 {
		t.Fatalf("running policy %v %v", p, err)
	}
	equal(t, "table version", f.table("laptop").Version, before)
}

func TestReportValidation(t *testing.T) {
	f := newFixture(t)
	tests := []struct {
		name string
		req  *vigilpb.ReportRequest
	}{
		{"no kind", &vigilpb.ReportRequest{Entity: "laptop", Source: "edr"}},
		{"bad kind", &vigilpb.ReportRequest{Entity: "car/x", Source: "edr"}},
		{"bad level", &vigilpb.ReportRequest{Entity: "device/laptop", Level: "ultra", Source: "edr"}},
		{"bad severity", &vigilpb.ReportRequest{Entity: "user/alice", Severity: "meh", Source: "edr"}},
		{"device not enrolled", &vigilpb.ReportRequest{Entity: "device/nosuch", Level: "low", Source: "edr"}},
		{"process on no device", &vigilpb.ReportRequest{Entity: "process/nosuch/42@1", Source: "edr"}},
		{"service not in the policy", &vigilpb.ReportRequest{Entity: "service/nosuch", Level: "low", Source: "edr"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := f.e.Report(context.Background(), tt.req); err == nil {
				t.Errorf("Report(%v) accepted", tt.req)
			}
		})
	}
	for _, entity := range []string{"device/nosuch", "service/nosuch"} {
		_, err := f.e.Report(context.Background(), &vigilpb.ReportRequest{Entity: entity, Source: "edr"})
		if status.Code(err) != codes.NotFound {
			t.Errorf("report on %s: %v, want NotFound", entity, err)
		}
	}
	ents, err := f.e.Entities("")
	if err != nil {
		t.Fatal(err)
	}
	for _, ent := range ents {
		if strings.Contains(ent.Name, "nosuch") {
			t.Errorf("refused report left entity %s", ent.Name)
		}
	}
	for _, entity := range []string{"device/laptop", "service/crm", "process/laptop/42@1", "user/alice"} {
		if _, err := f.e.Report(context.Background(), &vigilpb.ReportRequest{Entity: entity, Source: "edr"}); err != nil {
			t.Errorf("report on %s: %v", entity, err)
		}
	}
}

func TestTimeWindowOpensAndCloses(t *testing.T) {
	f := newFixture(t)
	doc := `
version: 1
levels: [low, high]
defaults: {level: high, traffic: allow, unknown_peers: deny}
services:
  - {name: crm, agents: [crm-host], ports: [8080], min_level: high}
rules:
  - name: office-hours
    action: allow
    subjects: [{devices: ["*"]}]
    services: [crm]
    time: [{days: [mon, tue, wed, thu, fri, sat, sun], from: "12:05", to: "12:10"}]
`
	if v, perrs, err := f.e.ApplyPolicy(context.Background(), &vigilpb.PolicyDocument{Filename: "w.yaml", Yaml: doc}, "admin"); v != 2 || err != nil {
		t.Fatalf("apply: %d %v %v", v, perrs, err)
	}
	tests := []struct {
		name    string
		advance time.Duration
		want    vigilpb.Verdict
	}{
		{"before the window", 0, vigilpb.Verdict_VERDICT_DENY},
		{"inside the window", 6 * time.Minute, vigilpb.Verdict_VERDICT_ALLOW},
		{"after the window", 5 * time.Minute, vigilpb.Verdict_VERDICT_DENY},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f.clock.advance(tt.advance)
			if err := f.e.Tick(); err != nil {
				t.Fatal(err)
			}
			equal(t, "laptop -> crm", f.egress("laptop", "10.2.0.1", 8080), tt.want)
		})
	}
	hist, err := f.e.History("device/laptop")
	if err != nil || len(hist) != 0 {
		t.Fatalf("history of an untouched device: %v %v", hist, err)
	}
}

func TestHistoryKeepsEveryChange(t *testing.T) {
	f := newFixture(t)
	f.execBad(1)
	f.e.Report(context.Background(), &vigilpb.ReportRequest{Entity: "device/laptop", Level: "high", Source: "edr", Reason: "cleaned"})
	hist, err := f.e.History("device/laptop")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, c := range hist {
		got = append(got, c.From+"->"+c.To)
	}
	equal(t, "history", got, []string{"medium->low", "low->high"})
}

func TestCutBeforeHelloReachesTheTable(t *testing.T) {
	f := newFixture(t)
	if err := f.e.Cut(context.Background(), "late", "10.9.0.1:22"); err != nil {
		t.Fatal(err)
	}
	if err := f.e.Cut(context.Background(), "late", "not-an-address"); err == nil {
		t.Fatal("bad peer accepted")
	}
	tab := f.online("late", "10.1.0.50")
	equal(t, "cut peers at hello", tab.CutPeers, []string{"10.9.0.1:22"})
}

func TestRunStopsWithItsContext(t *testing.T) {
	f := newFixture(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- f.e.Run(ctx) }()
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestNewRejectsCorruptState(t *testing.T) {
	tests := []struct {
		name, key, value string
	}{
		{"entity", keyEntityPrefix + "device/x", "{"},
		{"cut", keyCutPrefix + "no-separator", "{}"},
		{"missing policy version", keyPolicyCurrent, "\x00\x00\x00\x00\x00\x00\x00\x09"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			kv := newMemKV()
			kv.Set([]byte(tt.key), []byte(tt.value))
			if _, err := New(Config{KV: kv, Sink: newRecSink()}); err == nil {
				t.Fatalf("New accepted corrupt %s", tt.name)
			}
		})
	}
}

// TestFeedHashesArmedAtExec checks that a feed's hashes reach every agent's
// kill-on-exec list before any of them is seen running, and leave it when
// the feed drops them.
func TestFeedHashesArmedAtExec(t *testing.T) {
	f := newFixture(t)
	feedHash := strings.Repeat("f", 64)
	pushed := func() []string {
		f.sink.mu.Lock()
		defer f.sink.mu.Unlock()
		var added []string
		for _, d := range f.sink.diffs["laptop"] {
			added = append(added, d.KillOnExecAdded...)
		}
		return added
	}

	f.e.SetIndicators("osint", []policy.Indicator{{Kind: policy.IndicatorSHA256, SHA256: feedHash,
		ID: "indicator--1", Source: "osint"}})
	for _, agent := range []string{"laptop", "crm-host"} {
		if !slices.Contains(f.table(agent).KillOnExec, feedHash) {
			t.Errorf("%s kill-on-exec %v lacks the feed hash", agent, f.table(agent).KillOnExec)
		}
	}
	if !slices.Contains(pushed(), feedHash) {
		t.Errorf("no diff armed the feed hash on laptop: %v", pushed())
	}

	f.e.SetIndicators("osint", nil)
	if slices.Contains(f.table("laptop").KillOnExec, feedHash) {
		t.Errorf("feed hash still armed after the feed dropped it")
	}
}

// TestRevokedAgentLosesAdmission checks that a revoked device's address no
// longer admits it to the services it could reach.
func TestRevokedAgentLosesAdmission(t *testing.T) {
	f := newFixture(t)
	if got := ingressVerdict(f.table("crm-host"), "10.1.0.2/32"); got != vigilpb.Verdict_VERDICT_ALLOW {
		t.Fatalf("laptop admitted = %v before revocation, want allow", got)
	}
	if err := f.e.AgentRevoked(context.Background(), "laptop"); err != nil {
		t.Fatal(err)
	}
	if got := ingressVerdict(f.table("crm-host"), "10.1.0.2/32"); got == vigilpb.Verdict_VERDICT_ALLOW {
		t.Errorf("revoked laptop still admitted to crm")
	}
	f.reopen()
	if got := ingressVerdict(f.table("crm-host"), "10.1.0.2/32"); got == vigilpb.Verdict_VERDICT_ALLOW {
		t.Errorf("revoked laptop admitted again after a restart")
	}
}

// conflictFindings returns the address-conflict findings recorded so far,
// as "entity" strings.
func (s *recSink) conflictFindings() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for _, ev := range s.events {
		if f := ev.GetFinding(); f.GetDetector() == addressConflict && f.GetSeverity() == "high" {
			out = append(out, f.GetEntity())
		}
	}
	sort.Strings(out)
	return out
}

// TestContestedAddressAdmitsNone checks that an address two agents claim
// admits neither, that each claimant gets one finding per change, and that
// the address admits its agent again once the other drops its claim.
func TestContestedAddressAdmitsNone(t *testing.T) {
	f := newFixture(t)
	f.online("mallory", "10.1.0.2")
	if got := ingressVerdict(f.table("crm-host"), "10.1.0.2/32"); got == vigilpb.Verdict_VERDICT_ALLOW {
		t.Errorf("contested 10.1.0.2 still admitted to crm")
	}
	want := []string{"device/laptop", "device/mallory"}
	equal(t, "findings", f.sink.conflictFindings(), want)

	f.online("mallory", "10.1.0.2")
	f.online("laptop", "10.1.0.2")
	equal(t, "findings after the same hellos", f.sink.conflictFindings(), want)

	f.online("mallory", "10.1.0.9")
	equal(t, "laptop admitted again", ingressVerdict(f.table("crm-host"), "10.1.0.2/32"), vigilpb.Verdict_VERDICT_ALLOW)
	equal(t, "findings after the claim ended", f.sink.conflictFindings(), want)
}
