package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	vigilpb "github.com/vigilsec/vigil/gen/vigil/v1"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// fixture is a fake server with credentials for it.
type fixture struct {
	fake  *fakeAdmin
	addr  string
	creds string // admin role
	ca    *authority
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	ca := newAuthority(t)
	f := &fakeAdmin{
		agents: &vigilpb.ListAgentsResponse{Agents: []*vigilpb.Agent{{
			Name: "laptop-7", Online: true, Level: "high", TableVersion: 4, Scope: "/",
			Capabilities: &vigilpb.Capabilities{
				Enforcement:     []string{"egress", "kill"},
				ExecEnforcement: "kill-on-exec",
				Hooks:           map[string]bool{"cgroup/connect4": true, "cgroup/connect6": true},
			},
		}, {Name: "db-1", Revoked: true, Level: "untrusted"}}},
		entities: &vigilpb.ListEntitiesResponse{Entities: []*vigilpb.Entity{{
			Name: "device/laptop-7", Level: "low", UpdatedUnix: 1700000000,
			Findings: []*vigilpb.Finding{{Detector: "threat-intel", Reason: "talked to a known bad address"}},
		}}},
		history: &vigilpb.PolicyHistoryResponse{Policies: []*vigilpb.GetPolicyResponse{
			{Version: 2, AppliedBy: "admin", AppliedUnix: 1700000100, Document: &vigilpb.PolicyDocument{Filename: "p.yaml"}},
			{Version: 1, AppliedBy: "admin", AppliedUnix: 1700000000},
		}},
		policy: &vigilpb.GetPolicyResponse{Version: 2, Document: &vigilpb.PolicyDocument{Filename: "p.yaml", Yaml: "levels: [low, high]\n"}},
		events: []*vigilpb.Event{
			{Seq: 1, Kind: vigilpb.EventKind_EVENT_KIND_CONNECT, Agent: "laptop-7", TimeUnixNano: 1700000000e9,
				Process: &vigilpb.Process{Pid: 42, Executable: "/usr/bin/curl"},
				Connection: &vigilpb.Connection{RemoteAddress: "10.0.0.9", RemotePort: 443,
					Protocol: vigilpb.Protocol_PROTOCOL_TCP, Verdict: vigilpb.Verdict_VERDICT_DENY, RuleId: 3, Rule: "no-egress"}},
			{Kind: vigilpb.EventKind_EVENT_KIND_LEVEL, Entity: "device/laptop-7", Message: "high -> low"},
			{Kind: vigilpb.EventKind_EVENT_KIND_EXEC, Agent: "laptop-7", TimeUnixNano: 1700000001e9,
				Process: &vigilpb.Process{Pid: 43, Uid: 1000, Executable: "/usr/bin/python3",
					Args: []string{"python", "-c", "import os\nos.exit(0)", "-v"}}},
		},
		apply:   &vigilpb.ApplyPolicyResponse{Version: 3},
		outcome: &vigilpb.InstructionResponse{Seq: 7, Outcome: vigilpb.InstructionOutcome_INSTRUCTION_OUTCOME_DONE, LatencyUs: 150},
		explain: &vigilpb.ExplainResponse{Verdict: vigilpb.Verdict_VERDICT_DENY, Rule: "crm-access", RuleId: 3,
			Service: "service/crm", RequiredLevel: "high",
			SubjectLevels: map[string]string{"user/alice": "high", "device/laptop-7": "low"},
			Reasons:       []string{"device/laptop-7 is low, service/crm requires high"}},
	}
	fx := &fixture{fake: f, ca: ca}
	fx.addr = serve(t, ca, f)
	fx.creds = ca.writeCredentials(t, filepath.Join(t.TempDir(), "admin"), "admin")
	return fx
}

// ctl runs vigilctl against the fixture's server with admin credentials.
func (fx *fixture) ctl(t *testing.T, args ...string) result {
	t.Helper()
	return runCtl(t, append([]string{"--server", fx.addr, "--credentials", fx.creds}, args...)...)
}

// runCtl runs vigilctl with exactly args.
func runCtl(t *testing.T, args ...string) result {
	t.Helper()
	var stdout, stderr bytes.Buffer
	code := run(context.Background(), append([]string{"vigilctl"}, args...), &stdout, &stderr)
	return result{code: code, stdout: stdout.String(), stderr: stderr.String()}
}

func TestListingsTable(t *testing.T) {
	fx := newFixture(t)
	tests := []struct {
		name string
		args []string
		want []string // lines of the table, fields split by whitespace
	}{
		{
			name: "agents",
			args: []string{"agents", "list"},
			want: []string{
				"NAME STATE LEVEL TABLE ENFORCEMENT EXEC SCOPE LAST SEEN",
				"laptop-7 online high 4 egress,kill kill-on-exec / -",
				"db-1 revoked untrusted 0 - - - -",
			},
		},
		{
			name: "entities",
			args: []string{"entities", "list"},
			want: []string{
				"ENTITY LEVEL SINCE FINDINGS",
				"device/laptop-7 low " + unixTime(1700000000) + " threat-intel: talked to a known bad address",
			},
		},
		{
			name: "policy history",
			args: []string{"policy", "history"},
			want: []string{
				"VERSION APPLIED BY FILE",
				"2 " + unixTime(1700000100) + " admin p.yaml",
				"1 " + unixTime(1700000000) + " admin -",
			},
		},
		{
			name: "events",
			args: []string{"events"},
			want: []string{
				"TIME AGENT KIND EVENT",
				nanoTime(1700000000e9) + " laptop-7 connect curl[42] -> 10.0.0.9:443 tcp deny (rule no-egress)",
				"- server level device/laptop-7 high -> low",
				nanoTime(1700000001e9) + ` laptop-7 exec python3[43] uid 1000 /usr/bin/python3 -c "import os\nos.exit(0)" -v`,
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := fx.ctl(t, tt.args...)
			if r.code != exitOK {
				t.Fatalf("want exit 0, got %s", r)
			}
			got := strings.Split(strings.TrimRight(r.stdout, "\n"), "\n")
			if len(got) != len(tt.want) {
				t.Fatalf("want %d lines, got %s", len(tt.want), r)
			}
			for i := range got {
				if norm(got[i]) != norm(tt.want[i]) {
					t.Errorf("line %d:\n got %q\nwant %q", i, got[i], tt.want[i])
				}
			}
		})
	}
}

// norm collapses runs of whitespace so table alignment does not matter.
func norm(s string) string { return strings.Join(strings.Fields(s), " ") }

func TestListingsJSON(t *testing.T) {
	fx := newFixture(t)
	tests := []struct {
		name string
		args []string
		want proto.Message
	}{
		{name: "agents", args: []string{"agents", "list", "-o", "json"}, want: fx.fake.agents},
		{name: "entities", args: []string{"entities", "list", "-o", "json"}, want: fx.fake.entities},
		{name: "policy history", args: []string{"policy", "history", "-o", "json"}, want: fx.fake.history},
		{name: "policy get", args: []string{"policy", "get", "-o", "json"}, want: fx.fake.policy},
		{name: "explain", args: []string{"explain", "--agent", "a", "--pid", "1", "--dest", "10.0.0.9:443", "-o", "json"},
			want: fx.fake.explain},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := fx.ctl(t, tt.args...)
			if r.code != exitOK {
				t.Fatalf("want exit 0, got %s", r)
			}
			got := tt.want.ProtoReflect().New().Interface()
			if err := protojson.Unmarshal([]byte(r.stdout), got); err != nil {
				t.Fatalf("decode output: %v\n%s", err, r)
			}
			if !proto.Equal(got, tt.want) {
				t.Errorf("round trip differs:\n got %v\nwant %v", got, tt.want)
			}
			if again := fx.ctl(t, tt.args...); again.stdout != r.stdout {
				t.Errorf("output not stable:\n%s\n%s", r.stdout, again.stdout)
			}
		})
	}
}

func TestEventsJSONLines(t *testing.T) {
	fx := newFixture(t)
	r := fx.ctl(t, "events", "-o", "json")
	if r.code != exitOK {
		t.Fatalf("want exit 0, got %s", r)
	}
	lines := strings.Split(strings.TrimRight(r.stdout, "\n"), "\n")
	if len(lines) != len(fx.fake.events) {
		t.Fatalf("want %d lines, got %s", len(fx.fake.events), r)
	}
	for i, line := range lines {
		var ev vigilpb.Event
		if err := protojson.Unmarshal([]byte(line), &ev); err != nil {
			t.Fatalf("line %d: %v", i, err)
		}
		if !proto.Equal(&ev, fx.fake.events[i]) {
			t.Errorf("line %d: got %v, want %v", i, &ev, fx.fake.events[i])
		}
	}
}

// TestEventsTruncatedSaysSo checks that a reply the server cut to its
// message bound is flagged on stderr, leaving stdout to the events.
func TestEventsTruncatedSaysSo(t *testing.T) {
	fx := newFixture(t)
	fx.fake.cutShort = true
	r := fx.ctl(t, "events", "--limit", "10000", "-o", "json")
	want := fmt.Sprintf("events: %d newest shown; older ones left out", len(fx.fake.events))
	if r.code != exitOK || !strings.HasPrefix(r.stderr, want) {
		t.Fatalf("want exit 0 and stderr %q, got %s", want, r)
	}
	if lines := strings.Count(r.stdout, "\n"); lines != len(fx.fake.events) {
		t.Errorf("stdout has %d lines, want %d events", lines, len(fx.fake.events))
	}
}

func TestAgentsListJSONShape(t *testing.T) {
	// Scripts and the end-to-end tests read these protojson names.
	fx := newFixture(t)
	r := fx.ctl(t, "agents", "list", "-o", "json")
	var out struct {
		Agents []struct {
			Name         string `json:"name"`
			Online       bool   `json:"online"`
			TableVersion uint64 `json:"tableVersion,string"`
		} `json:"agents"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &out); err != nil {
		t.Fatalf("decode: %v\n%s", err, r)
	}
	if len(out.Agents) != 2 || out.Agents[0].Name != "laptop-7" || !out.Agents[0].Online || out.Agents[0].TableVersion != 4 {
		t.Errorf("unexpected agents: %+v", out.Agents)
	}
}

func TestRequests(t *testing.T) {
	fx := newFixture(t)
	tests := []struct {
		name   string
		args   []string
		want   proto.Message
		stdout string
	}{
		{
			name:   "token ttl",
			args:   []string{"token", "create", "--ttl", "10m"},
			want:   &vigilpb.CreateTokenRequest{TtlSeconds: 600},
			stdout: "vgl1.secret\n",
		},
		{
			name: "entities kind",
			args: []string{"entities", "list", "--kind", "device"},
			want: &vigilpb.ListEntitiesRequest{Kind: "device"},
		},
		{
			name: "events filters",
			args: []string{"events", "--agent", "laptop-7", "--kind", "connect,exec", "--kind", "finding", "--limit", "5"},
			want: &vigilpb.QueryEventsRequest{Agent: "laptop-7", Limit: 5, Kinds: []vigilpb.EventKind{
				vigilpb.EventKind_EVENT_KIND_CONNECT, vigilpb.EventKind_EVENT_KIND_EXEC, vigilpb.EventKind_EVENT_KIND_FINDING}},
		},
		{
			name: "explain udp",
			args: []string{"explain", "--agent", "laptop-7", "--pid", "42", "--dest", "[::1]:53", "--proto", "udp"},
			want: &vigilpb.ExplainRequest{Agent: "laptop-7", Pid: 42, Destination: "[::1]:53",
				Protocol: vigilpb.Protocol_PROTOCOL_UDP},
		},
		{
			name:   "kill tree",
			args:   []string{"kill", "--agent", "laptop-7", "--pid", "42", "--tree"},
			want:   &vigilpb.KillRequest{Agent: "laptop-7", Pid: 42, Tree: true},
			stdout: "kill pid 42 on laptop-7: done (instruction 7, 150µs)\n",
		},
		{
			name: "cut address",
			args: []string{"cut", "--agent", "laptop-7", "--peer", "10.0.0.9"},
			want: &vigilpb.CutRequest{Agent: "laptop-7", Peer: "10.0.0.9"},
		},
		{
			name: "restore v6 with port",
			args: []string{"restore", "--agent", "laptop-7", "--peer", "[2001:db8::1]:443"},
			want: &vigilpb.RestoreRequest{Agent: "laptop-7", Peer: "[2001:db8::1]:443"},
		},
		{
			name: "report",
			args: []string{"report", "--entity", "user/alice", "--level", "low", "--source", "edr",
				"--reason", "malware", "--severity", "high", "--ttl", "1h"},
			want: &vigilpb.ReportRequest{Entity: "user/alice", Level: "low", Source: "edr", Reason: "malware",
				Severity: "high", TtlSeconds: 3600},
			stdout: "user/alice: level low\n",
		},
		{
			name:   "revoke",
			args:   []string{"agents", "revoke", "db-1"},
			want:   &vigilpb.RevokeAgentRequest{Name: "db-1"},
			stdout: "revoked db-1\n",
		},
		{
			name: "policy get version",
			args: []string{"policy", "get", "--version", "2"},
			want: &vigilpb.GetPolicyRequest{Version: 2},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := fx.ctl(t, tt.args...)
			if r.code != exitOK {
				t.Fatalf("want exit 0, got %s", r)
			}
			if got := fx.fake.last(); !proto.Equal(got, tt.want) {
				t.Errorf("request:\n got %v\nwant %v", got, tt.want)
			}
			if tt.stdout != "" && r.stdout != tt.stdout {
				t.Errorf("stdout: got %q, want %q", r.stdout, tt.stdout)
			}
		})
	}
}

func TestPolicyApply(t *testing.T) {
	fx := newFixture(t)
	file := filepath.Join(t.TempDir(), "p.yaml")
	if err := os.WriteFile(file, []byte("levels: [low, high]\n"), 0o600); err != nil {
		t.Fatal(err)
	}

	r := fx.ctl(t, "policy", "apply", "-f", file)
	if r.code != exitOK || r.stdout != "policy version 3 applied\n" {
		t.Fatalf("want version 3 applied, got %s", r)
	}
	want := &vigilpb.ApplyPolicyRequest{Document: &vigilpb.PolicyDocument{Filename: file, Yaml: "levels: [low, high]\n"}}
	if got := fx.fake.last(); !proto.Equal(got, want) {
		t.Errorf("request: got %v, want %v", got, want)
	}

	fx.fake.apply = &vigilpb.ApplyPolicyResponse{Errors: []*vigilpb.PolicyError{
		{Filename: file, Line: 4, Column: 7, Field: "rules[0].services[0]", Message: "unknown service \"crm\""},
	}}
	r = fx.ctl(t, "policy", "apply", "-f", file)
	if r.code != exitRejected {
		t.Fatalf("want exit 1, got %s", r)
	}
	if wantErr := file + ":4:7: rules[0].services[0]: unknown service \"crm\"\n"; !strings.HasPrefix(r.stderr, wantErr) {
		t.Errorf("stderr: got %q, want prefix %q", r.stderr, wantErr)
	}
}

func TestPolicyGetPrintsDocument(t *testing.T) {
	fx := newFixture(t)
	r := fx.ctl(t, "policy", "get")
	if r.code != exitOK || !strings.HasSuffix(r.stdout, "\nlevels: [low, high]\n") || !strings.HasPrefix(r.stdout, "# version 2 ") {
		t.Errorf("unexpected output: %s", r)
	}
}

func TestExplainTable(t *testing.T) {
	fx := newFixture(t)
	r := fx.ctl(t, "explain", "--agent", "laptop-7", "--pid", "42", "--dest", "10.0.0.9:443")
	want := "verdict:  deny\n" +
		"rule:     crm-access (id 3)\n" +
		"service:  service/crm (requires high)\n" +
		"levels:   device/laptop-7 low, user/alice high\n" +
		"because:\n  - device/laptop-7 is low, service/crm requires high\n"
	if r.code != exitOK || r.stdout != want {
		t.Errorf("got %s\nwant stdout:\n%s", r, want)
	}
}

func TestErrors(t *testing.T) {
	fx := newFixture(t)
	viewer := fx.ca.writeCredentials(t, filepath.Join(t.TempDir(), "viewer"), "viewer")
	stranger := newAuthority(t).writeCredentials(t, filepath.Join(t.TempDir(), "stranger"), "admin")
	down := closedAddr(t)

	tests := []struct {
		name     string
		args     []string
		outcome  *vigilpb.InstructionResponse
		failWith error
		code     int
		stderr   string
	}{
		{
			name:   "viewer cannot kill",
			args:   []string{"--server", fx.addr, "--credentials", viewer, "kill", "--agent", "a", "--pid", "1"},
			code:   exitRejected,
			stderr: "vigilctl: permission denied: role viewer cannot kill\n",
		},
		{
			name: "viewer may list",
			args: []string{"--server", fx.addr, "--credentials", viewer, "agents", "list"},
			code: exitOK,
		},
		{
			name:   "server down",
			args:   []string{"--server", down, "--credentials", fx.creds, "agents", "list"},
			code:   exitOther,
			stderr: "vigilctl: server " + down + " unreachable: ",
		},
		{
			name:   "server signed by another ca",
			args:   []string{"--server", fx.addr, "--credentials", stranger, "agents", "list"},
			code:   exitOther,
			stderr: "vigilctl: tls handshake with " + fx.addr + " failed: tls: failed to verify certificate: x509: ",
		},
		{
			name:     "not found",
			args:     []string{"--server", fx.addr, "--credentials", fx.creds, "agents", "revoke", "nobody"},
			failWith: status.Error(codes.NotFound, "agent nobody"),
			code:     exitRejected,
			stderr:   "vigilctl: not found: agent nobody\n",
		},
		{
			name:     "internal",
			args:     []string{"--server", fx.addr, "--credentials", fx.creds, "agents", "list"},
			failWith: status.Error(codes.Internal, "store unavailable"),
			code:     exitOther,
			stderr:   "vigilctl: server error: store unavailable\n",
		},
		{
			name:    "kill target gone",
			args:    []string{"--server", fx.addr, "--credentials", fx.creds, "kill", "--agent", "a", "--pid", "9"},
			outcome: &vigilpb.InstructionResponse{Seq: 8, Outcome: vigilpb.InstructionOutcome_INSTRUCTION_OUTCOME_NOT_FOUND},
			code:    exitRejected,
			stderr:  "vigilctl: kill pid 9 on a: target not found (instruction 8)\n",
		},
		{
			name: "cut failed",
			args: []string{"--server", fx.addr, "--credentials", fx.creds, "cut", "--agent", "a", "--peer", "10.0.0.9:22"},
			outcome: &vigilpb.InstructionResponse{Seq: 9, Outcome: vigilpb.InstructionOutcome_INSTRUCTION_OUTCOME_FAILED,
				Error: "no cut hook"},
			code:   exitRejected,
			stderr: "vigilctl: cut 10.0.0.9:22 on a: failed (instruction 9): no cut hook\n",
		},
		{
			name:   "missing credentials file",
			args:   []string{"--server", fx.addr, "--credentials", t.TempDir(), "agents", "list"},
			code:   exitOther,
			stderr: "vigilctl: read ca: open ",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fx.fake.failWith, fx.fake.outcome = tt.failWith, tt.outcome
			if tt.outcome == nil {
				fx.fake.outcome = &vigilpb.InstructionResponse{Outcome: vigilpb.InstructionOutcome_INSTRUCTION_OUTCOME_DONE}
			}
			r := runCtl(t, tt.args...)
			if r.code != tt.code {
				t.Fatalf("want exit %d, got %s", tt.code, r)
			}
			if !strings.HasPrefix(r.stderr, tt.stderr) {
				t.Errorf("stderr: got %q, want prefix %q", r.stderr, tt.stderr)
			}
		})
	}
}

func TestUsageErrors(t *testing.T) {
	fx := newFixture(t)
	tests := []struct {
		name   string
		args   []string
		stderr string
	}{
		{name: "unknown command", args: []string{"frobnicate"}, stderr: "vigilctl: no help topic for 'frobnicate'\n"},
		{name: "unknown flag", args: []string{"agents", "list", "--colour"}, stderr: "vigilctl: flag provided but not defined: -colour\n"},
		{name: "kill without pid", args: []string{"kill", "--agent", "a"}, stderr: "vigilctl: kill: --pid is required\n"},
		{name: "bad output", args: []string{"agents", "list", "-o", "yaml"}, stderr: "vigilctl: unknown output format \"yaml\""},
		{name: "bad kind", args: []string{"events", "--kind", "dance"}, stderr: "vigilctl: events: unknown kind \"dance\""},
		{name: "follow with limit", args: []string{"events", "--follow", "--limit", "3"},
			stderr: "vigilctl: events: --limit applies to stored events, not to --follow\n"},
		{name: "bad entity kind", args: []string{"entities", "list", "--kind", "robot"}, stderr: "vigilctl: entities list: unknown kind"},
		{name: "bad dest", args: []string{"explain", "--agent", "a", "--pid", "1", "--dest", "10.0.0.9"},
			stderr: "vigilctl: explain: --dest \"10.0.0.9\": want IP:PORT\n"},
		{name: "bad proto", args: []string{"explain", "--agent", "a", "--pid", "1", "--dest", "10.0.0.9:1", "--proto", "sctp"},
			stderr: "vigilctl: explain: --proto \"sctp\": want tcp or udp\n"},
		{name: "bad peer", args: []string{"cut", "--agent", "a", "--peer", "host.example"},
			stderr: "vigilctl: cut: --peer \"host.example\": want IP or IP:PORT\n"},
		{name: "bad severity", args: []string{"report", "--entity", "user/a", "--level", "low", "--source", "s",
			"--reason", "r", "--severity", "dire"}, stderr: "vigilctl: report: --severity \"dire\""},
		{name: "revoke without name", args: []string{"agents", "revoke"}, stderr: "vigilctl: agents revoke: want one agent NAME\n"},
		{name: "apply without file", args: []string{"policy", "apply"}, stderr: "vigilctl: policy apply: --file is required\n"},
		{name: "bad duration", args: []string{"token", "create", "--ttl", "soon"}, stderr: "vigilctl: invalid value \"soon\" for flag -ttl"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := len(fx.fake.requests)
			r := fx.ctl(t, tt.args...)
			if r.code != exitUsage {
				t.Fatalf("want exit 2, got %s", r)
			}
			if !strings.HasPrefix(r.stderr, tt.stderr) {
				t.Errorf("stderr: got %q, want prefix %q", r.stderr, tt.stderr)
			}
			if len(fx.fake.requests) != before {
				t.Errorf("a usage error reached the server")
			}
		})
	}
}

func TestEnvironment(t *testing.T) {
	fx := newFixture(t)
	t.Setenv("VIGIL_SERVER", fx.addr)
	t.Setenv("VIGIL_CREDENTIALS", fx.creds)
	if r := runCtl(t, "agents", "list", "-o", "json"); r.code != exitOK {
		t.Fatalf("environment not used: %s", r)
	}

	// Flags win over the environment.
	t.Setenv("VIGIL_SERVER", closedAddr(t))
	if r := runCtl(t, "--server", fx.addr, "agents", "list"); r.code != exitOK {
		t.Fatalf("--server did not override VIGIL_SERVER: %s", r)
	}
}

func TestDefaultCredentials(t *testing.T) {
	fx := newFixture(t)
	t.Setenv("VIGIL_CREDENTIALS", "")

	t.Chdir(t.TempDir())
	r := runCtl(t, "--server", fx.addr, "agents", "list")
	if r.code != exitUsage || !strings.Contains(r.stderr, "no credentials: pass --credentials DIR or set VIGIL_CREDENTIALS") {
		t.Fatalf("want a usage error naming the missing credentials, got %s", r)
	}

	fx.ca.writeCredentials(t, filepath.Join("var", "server", "admin"), "admin")
	if r := runCtl(t, "--server", fx.addr, "agents", "list"); r.code != exitOK {
		t.Fatalf("default ./var/server/admin not used: %s", r)
	}
}

// syncBuffer is a bytes.Buffer safe for one writer and one reader.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer // guarded by mu
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func TestFollowUntilInterrupted(t *testing.T) {
	fx := newFixture(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var stdout, stderr syncBuffer
	done := make(chan int)
	go func() {
		done <- run(ctx, []string{"vigilctl", "--server", fx.addr, "--credentials", fx.creds,
			"events", "--follow", "--agent", "laptop-7", "-o", "json"}, &stdout, &stderr)
	}()

	deadline := time.Now().Add(10 * time.Second)
	for strings.Count(stdout.String(), "\n") < len(fx.fake.events) {
		if time.Now().After(deadline) {
			t.Fatalf("no events streamed: stdout %q stderr %q", stdout.String(), stderr.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	select {
	case code := <-done:
		t.Fatalf("follow ended on its own with exit %d", code)
	default:
	}

	cancel() // what Ctrl-C does
	if code := <-done; code != exitOK {
		t.Fatalf("want exit 0 after interrupt, got %d: %s", code, stderr.String())
	}
	want := &vigilpb.FollowEventsRequest{Agent: "laptop-7"}
	if got := fx.fake.last(); !proto.Equal(got, want) {
		t.Errorf("request: got %v, want %v", got, want)
	}
}
