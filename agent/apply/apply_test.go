package apply

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vigilsec/vigil/agent/dataplane"
	"github.com/vigilsec/vigil/agent/proctable"
	vigilpb "github.com/vigilsec/vigil/gen/vigil/v1"
)

// recordingKernel stands in for the dataplane in translation tests: it keeps
// the tables and actions it is given and fails when told to.
type recordingKernel struct {
	mu       sync.Mutex
	tables   []dataplane.Table
	kills    []string
	cuts     []dataplane.Peer
	calls    []string // "table", "cut", "restore", "pend E+I", "clear", in call order
	failNext error
	live     map[uint32]uint64 // pid -> start time
}

func (k *recordingKernel) ApplyTable(t dataplane.Table) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if err := k.failNext; err != nil {
		k.failNext = nil
		return err
	}
	k.tables = append(k.tables, t)
	k.calls = append(k.calls, "table")
	return nil
}

func (k *recordingKernel) PendDenies(eg []dataplane.EgressRule, in []dataplane.IngressRule) (int, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.calls = append(k.calls, fmt.Sprintf("pend %d+%d", len(eg), len(in)))
	return len(eg) + len(in), nil
}

func (k *recordingKernel) ClearPending() error {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.calls = append(k.calls, "clear")
	return nil
}

func (k *recordingKernel) Kill(pid uint32, start uint64, tree bool) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.live[pid] != start {
		return fmt.Errorf("kill %d: %w", pid, ErrNoProcess)
	}
	k.kills = append(k.kills, fmt.Sprintf("%d@%d tree=%v", pid, start, tree))
	return nil
}

func (k *recordingKernel) StartTime(pid uint32) (uint64, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if s, ok := k.live[pid]; ok {
		return s, nil
	}
	return 0, ErrNoProcess
}

func (k *recordingKernel) Cut(p dataplane.Peer) (int, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.cuts = append(k.cuts, p)
	k.calls = append(k.calls, "cut")
	return 1, nil
}

func (k *recordingKernel) Restore(p dataplane.Peer) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.calls = append(k.calls, "restore")
	return nil
}

func (k *recordingKernel) last(t *testing.T) dataplane.Table {
	t.Helper()
	k.mu.Lock()
	defer k.mu.Unlock()
	if len(k.tables) == 0 {
		t.Fatal("no table applied")
	}
	return k.tables[len(k.tables)-1]
}

type fixture struct {
	k     *recordingKernel
	procs *proctable.Table
	a     *Applier
	dir   string
	scope string
	exe   string // a file whose hash the resolver has seen
	sha   string
	id    dataplane.ExecIdentity
}

var serverPrefix = netip.MustParsePrefix("127.0.0.9/32")

func newFixture(t *testing.T) *fixture {
	t.Helper()
	f := &fixture{k: &recordingKernel{live: map[uint32]uint64{}}, procs: proctable.New("/proc"), dir: t.TempDir(), scope: t.TempDir()}
	f.exe = filepath.Join(t.TempDir(), "tool")
	os.WriteFile(f.exe, []byte("#!/bin/sh\necho tool\n"), 0o755)
	var err error
	if f.sha, f.id, err = f.procs.HashFile(f.exe); err != nil {
		t.Fatal(err)
	}
	f.a = f.open(t)
	if err := f.a.SetOnline(true); err != nil {
		t.Fatal(err)
	}
	return f
}

func (f *fixture) open(t *testing.T) *Applier {
	t.Helper()
	a, err := New(Config{Kernel: f.k, Resolver: f.procs, StateDir: f.dir, Scope: f.scope, Server: []netip.Prefix{serverPrefix}, ServerPort: 7443})
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func entry(id uint32, dest string, v vigilpb.Verdict, s *vigilpb.Subject) *vigilpb.EgressEntry {
	return &vigilpb.EgressEntry{RuleId: id, Destination: dest, PortMin: 1, PortMax: 65535,
		Protocol: vigilpb.Protocol_PROTOCOL_TCP, Verdict: v, Subject: s}
}

func baseTable() *vigilpb.VerdictTable {
	return &vigilpb.VerdictTable{
		Version: 1, DefaultEgress: vigilpb.Verdict_VERDICT_ALLOW,
		Egress: []*vigilpb.EgressEntry{entry(1, "10.0.0.0/8", vigilpb.Verdict_VERDICT_DENY, nil)},
	}
}

func TestTranslateSubjects(t *testing.T) {
	f := newFixture(t)
	os.Mkdir(filepath.Join(f.scope, "web"), 0o755)
	var st syscall.Stat_t
	syscall.Stat(filepath.Join(f.scope, "web"), &st)
	uid := uint32(1000)

	tests := []struct {
		name    string
		subject *vigilpb.Subject
		want    []dataplane.Subject
	}{
		{"none", nil, []dataplane.Subject{{}}},
		{"uid", &vigilpb.Subject{Uid: &uid}, []dataplane.Subject{{UID: &uid}}},
		{"sha seen", &vigilpb.Subject{ExecutableSha256: strings.ToUpper(f.sha)}, []dataplane.Subject{{Exec: &f.id}}},
		{"sha never seen", &vigilpb.Subject{ExecutableSha256: strings.Repeat("ab", 32)}, nil},
		{"path", &vigilpb.Subject{ExecutablePath: f.exe}, []dataplane.Subject{{Exec: &f.id}}},
		{"path with wrong sha", &vigilpb.Subject{ExecutablePath: f.exe, ExecutableSha256: strings.Repeat("ab", 32)}, nil},
		{"missing path", &vigilpb.Subject{ExecutablePath: "/nonexistent/bin"}, nil},
		{"cgroup", &vigilpb.Subject{CgroupPath: "web"}, []dataplane.Subject{{CgroupID: st.Ino}}},
		{"missing cgroup", &vigilpb.Subject{CgroupPath: "db"}, nil},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tab := baseTable()
			tab.Version = uint64(10 + i)
			tab.Egress[0].Subject = tt.subject
			if ack := f.a.ApplyTable(tab); ack.Error != "" {
				t.Fatalf("ack error %q", ack.Error)
			}
			got := f.k.last(t).Egress
			if len(got) != len(tt.want) {
				t.Fatalf("got %d kernel rules %+v, want %d", len(got), got, len(tt.want))
			}
			for j, r := range got {
				if !sameSubject(r.Subject, tt.want[j]) {
					t.Errorf("rule %d subject %+v, want %+v", j, r.Subject, tt.want[j])
				}
				if r.Dest != netip.MustParsePrefix("10.0.0.0/8") || r.Verdict != dataplane.VerdictDeny || r.RuleID != 1 {
					t.Errorf("rule %d = %+v", j, r)
				}
			}
		})
	}
}

func sameSubject(a, b dataplane.Subject) bool {
	eqU := (a.UID == nil) == (b.UID == nil) && (a.UID == nil || *a.UID == *b.UID)
	eqE := (a.Exec == nil) == (b.Exec == nil) && (a.Exec == nil || *a.Exec == *b.Exec)
	return eqU && eqE && a.CgroupID == b.CgroupID
}

func TestBadTableKeepsPrevious(t *testing.T) {
	tests := []struct {
		name    string
		edit    func(*vigilpb.VerdictTable)
		kernel  error
		wantErr string
	}{
		{"bad destination", func(t *vigilpb.VerdictTable) { t.Egress[0].Destination = "10.0.0.300/8" }, nil, "egress[0] (rule 1): destination"},
		{"bad verdict", func(t *vigilpb.VerdictTable) { t.Egress[0].Verdict = 0 }, nil, "egress[0] (rule 1): verdict"},
		{"bad ports", func(t *vigilpb.VerdictTable) { t.Egress[0].PortMin = 9; t.Egress[0].PortMax = 8 }, nil, "port range 9-8"},
		{"bad cut peer", func(t *vigilpb.VerdictTable) { t.CutPeers = []string{"nope"} }, nil, "cut_peers[0]"},
		{"kernel refuses", func(t *vigilpb.VerdictTable) {}, errors.New("map full"), "map full"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t)
			if ack := f.a.ApplyTable(baseTable()); ack.Error != "" {
				t.Fatal(ack.Error)
			}
			next := baseTable()
			next.Version = 2
			tt.edit(next)
			f.k.failNext = tt.kernel

			ack := f.a.ApplyTable(next)
			if ack.Version != 2 || !strings.Contains(ack.Error, tt.wantErr) {
				t.Fatalf("ack %v, want version 2 and error containing %q", ack, tt.wantErr)
			}
			if f.a.Version() != 1 || len(f.k.tables) != 1 {
				t.Errorf("held version %d after %d kernel writes, want 1 and 1", f.a.Version(), len(f.k.tables))
			}
		})
	}
}

func TestApplyDiff(t *testing.T) {
	f := newFixture(t)
	first := baseTable()
	first.KillOnExec = []string{strings.Repeat("cd", 32)}
	f.a.ApplyTable(first)

	diff := &vigilpb.TableDiff{
		BaseVersion: 1, Version: 2, PolicyVersion: 7,
		EgressRemoved:   []*vigilpb.EgressEntry{entry(1, "10.0.0.0/8", vigilpb.Verdict_VERDICT_DENY, nil)},
		EgressAdded:     []*vigilpb.EgressEntry{entry(2, "192.168.0.0/16", vigilpb.Verdict_VERDICT_AUDIT, nil)},
		KillOnExecAdded: []string{f.sha}, KillOnExecRemoved: []string{strings.Repeat("cd", 32)},
		DefaultEgress: vigilpb.Verdict_VERDICT_DENY, CutPeersAdded: []string{"127.0.0.5:80"},
		FailMode: vigilpb.FailMode_FAIL_MODE_CLOSED,
	}
	ack, err := f.a.ApplyDiff(diff)
	if err != nil || ack.Error != "" || ack.Version != 2 {
		t.Fatalf("ApplyDiff = %v, %v", ack, err)
	}

	kt := f.k.last(t)
	if len(kt.Egress) != 1 || kt.Egress[0].RuleID != 2 || kt.DefaultEgress != dataplane.VerdictDeny {
		t.Errorf("kernel egress %+v default %d, want only rule 2 and deny", kt.Egress, kt.DefaultEgress)
	}
	if len(kt.KillOnExec) != 1 || kt.KillOnExec[0] != f.id {
		t.Errorf("kill on exec %v, want [%v]", kt.KillOnExec, f.id)
	}
	if len(kt.Cut) != 1 || kt.Cut[0] != (dataplane.Peer{Addr: netip.MustParseAddr("127.0.0.5"), Port: 80}) {
		t.Errorf("cut %v", kt.Cut)
	}
	if got := f.a.Table(); got.PolicyVersion != 7 || got.FailMode != vigilpb.FailMode_FAIL_MODE_CLOSED {
		t.Errorf("held table %v", got)
	}

	if _, err := f.a.ApplyDiff(&vigilpb.TableDiff{BaseVersion: 1, Version: 3}); !errors.Is(err, ErrStaleBase) {
		t.Errorf("stale diff error %v, want ErrStaleBase", err)
	}
	if f.a.Version() != 2 {
		t.Errorf("version after stale diff %d, want 2", f.a.Version())
	}
}

func TestFailModes(t *testing.T) {
	tests := []struct {
		name        string
		mode        vigilpb.FailMode
		wantDefault dataplane.Verdict
		wantRule    dataplane.EgressRule
	}{
		{"last known", vigilpb.FailMode_FAIL_MODE_LAST_KNOWN, dataplane.VerdictAllow,
			dataplane.EgressRule{RuleID: 1, Dest: netip.MustParsePrefix("10.0.0.0/8"), PortMin: 1, PortMax: 65535, Proto: dataplane.ProtoTCP, Verdict: dataplane.VerdictDeny}},
		{"open", vigilpb.FailMode_FAIL_MODE_OPEN, dataplane.VerdictAllow,
			dataplane.EgressRule{RuleID: 1, Dest: netip.MustParsePrefix("10.0.0.0/8"), PortMin: 1, PortMax: 65535, Proto: dataplane.ProtoTCP, Verdict: dataplane.VerdictAudit}},
		{"closed", vigilpb.FailMode_FAIL_MODE_CLOSED, dataplane.VerdictDeny,
			dataplane.EgressRule{Dest: serverPrefix, PortMin: 7443, PortMax: 7443, Proto: dataplane.ProtoTCP, Verdict: dataplane.VerdictAllow}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t)
			tab := baseTable()
			tab.FailMode = tt.mode
			f.a.ApplyTable(tab)

			if err := f.a.SetOnline(false); err != nil {
				t.Fatal(err)
			}
			kt := f.k.last(t)
			if kt.DefaultEgress != tt.wantDefault || len(kt.Egress) != 1 || kt.Egress[0].Verdict != tt.wantRule.Verdict ||
				kt.Egress[0].Dest != tt.wantRule.Dest || kt.Egress[0].Proto != tt.wantRule.Proto ||
				kt.Egress[0].PortMin != tt.wantRule.PortMin || kt.Egress[0].PortMax != tt.wantRule.PortMax {
				t.Errorf("offline table default %d egress %+v, want default %d rule %+v", kt.DefaultEgress, kt.Egress, tt.wantDefault, tt.wantRule)
			}
			if len(kt.QuarantineExempt) != 1 || kt.QuarantineExempt[0] != serverPrefix {
				t.Errorf("quarantine exempt %v, want the server", kt.QuarantineExempt)
			}

			f.a.SetOnline(true)
			if kt := f.k.last(t); kt.Egress[0].Verdict != dataplane.VerdictDeny || kt.DefaultEgress != dataplane.VerdictAllow {
				t.Errorf("online again: %+v", kt)
			}
		})
	}
}

func TestInstructions(t *testing.T) {
	f := newFixture(t)
	f.a.ApplyTable(baseTable())
	f.k.live[42] = 4200

	tests := []struct {
		name    string
		ins     *vigilpb.Instruction
		want    vigilpb.InstructionOutcome
		wantErr string
	}{
		{"kill resolves start", &vigilpb.Instruction{Seq: 1, Kind: vigilpb.InstructionKind_INSTRUCTION_KIND_KILL, Pid: 42, Tree: true}, vigilpb.InstructionOutcome_INSTRUCTION_OUTCOME_DONE, ""},
		{"kill gone", &vigilpb.Instruction{Seq: 2, Kind: vigilpb.InstructionKind_INSTRUCTION_KIND_KILL, Pid: 43}, vigilpb.InstructionOutcome_INSTRUCTION_OUTCOME_NOT_FOUND, "no such process"},
		{"kill reused pid", &vigilpb.Instruction{Seq: 3, Kind: vigilpb.InstructionKind_INSTRUCTION_KIND_KILL, Pid: 42, StartTimeNs: 1}, vigilpb.InstructionOutcome_INSTRUCTION_OUTCOME_NOT_FOUND, "no such process"},
		{"cut", &vigilpb.Instruction{Seq: 4, Kind: vigilpb.InstructionKind_INSTRUCTION_KIND_CUT, Peer: "127.0.0.7"}, vigilpb.InstructionOutcome_INSTRUCTION_OUTCOME_DONE, ""},
		{"cut bad peer", &vigilpb.Instruction{Seq: 5, Kind: vigilpb.InstructionKind_INSTRUCTION_KIND_CUT, Peer: "x:y"}, vigilpb.InstructionOutcome_INSTRUCTION_OUTCOME_FAILED, "neither IP"},
		{"quarantine", &vigilpb.Instruction{Seq: 6, Kind: vigilpb.InstructionKind_INSTRUCTION_KIND_QUARANTINE}, vigilpb.InstructionOutcome_INSTRUCTION_OUTCOME_DONE, ""},
		{"kill on exec bad hash", &vigilpb.Instruction{Seq: 7, Kind: vigilpb.InstructionKind_INSTRUCTION_KIND_KILL_ON_EXEC, Sha256: "abc"}, vigilpb.InstructionOutcome_INSTRUCTION_OUTCOME_FAILED, "64 hex"},
		{"duplicate is not re-run", &vigilpb.Instruction{Seq: 2, Kind: vigilpb.InstructionKind_INSTRUCTION_KIND_KILL, Pid: 42}, vigilpb.InstructionOutcome_INSTRUCTION_OUTCOME_NOT_FOUND, "no such process"},
		{"unspecified", &vigilpb.Instruction{Seq: 8}, vigilpb.InstructionOutcome_INSTRUCTION_OUTCOME_FAILED, "not supported"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ack, err := f.a.Execute(tt.ins, time.Now().Add(-time.Millisecond))
			if err != nil {
				t.Fatalf("save instruction state: %v", err)
			}
			if ack.Seq != tt.ins.Seq || ack.Outcome != tt.want || !strings.Contains(ack.Error, tt.wantErr) {
				t.Errorf("ack %v, want seq %d outcome %s error ~%q", ack, tt.ins.Seq, tt.want, tt.wantErr)
			}
			if ack.Outcome == vigilpb.InstructionOutcome_INSTRUCTION_OUTCOME_DONE && ack.LatencyUs < 1000 {
				t.Errorf("latency %dus, want >= 1000 (received 1ms ago)", ack.LatencyUs)
			}
		})
	}

	if len(f.k.kills) != 1 || f.k.kills[0] != "42@4200 tree=true" {
		t.Errorf("kernel kills %v, want exactly [42@4200 tree=true]", f.k.kills)
	}
	kt := f.k.last(t)
	if !kt.Quarantined || len(kt.Cut) != 1 || len(f.k.cuts) != 1 {
		t.Errorf("kernel table quarantined=%v cut=%v, cuts %v", kt.Quarantined, kt.Cut, f.k.cuts)
	}

	// A restarted agent knows what it executed and its table version.
	again := f.open(t)
	if again.LastInstruction() != 8 || again.Version() != 1 {
		t.Errorf("after restart last seq %d version %d, want 8 and 1", again.LastInstruction(), again.Version())
	}
	if ack, _ := again.Execute(&vigilpb.Instruction{Seq: 1, Kind: vigilpb.InstructionKind_INSTRUCTION_KIND_KILL, Pid: 42}, time.Now()); ack.Outcome != vigilpb.InstructionOutcome_INSTRUCTION_OUTCOME_DONE || len(f.k.kills) != 1 {
		t.Errorf("duplicate after restart: ack %v, kills %v", ack, f.k.kills)
	}
}

// TestCutActsBeforeTableWrite checks that cut and restore reach the kernel
// before the table recording them is written, so they never wait for it.
func TestCutActsBeforeTableWrite(t *testing.T) {
	tests := []struct {
		name string
		kind vigilpb.InstructionKind
		want []string
	}{
		{"cut", vigilpb.InstructionKind_INSTRUCTION_KIND_CUT, []string{"cut", "table"}},
		{"restore", vigilpb.InstructionKind_INSTRUCTION_KIND_RESTORE, []string{"restore", "table"}},
	}
	f := newFixture(t)
	f.a.ApplyTable(baseTable())
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f.k.calls = nil
			ins := &vigilpb.Instruction{Seq: uint64(i + 1), Kind: tt.kind, Peer: "127.0.0.7:80"}
			if ack, _ := f.a.Execute(ins, time.Now()); ack.Outcome != vigilpb.InstructionOutcome_INSTRUCTION_OUTCOME_DONE {
				t.Fatalf("ack %v", ack)
			}
			if !slices.Equal(f.k.calls, tt.want) {
				t.Errorf("kernel calls %v, want %v", f.k.calls, tt.want)
			}
		})
	}
	if cut := f.k.last(t).Cut; len(cut) != 0 {
		t.Errorf("table cut peers after restore: %v", cut)
	}
}

// TestDiffDeniesGoFirst checks that the rules a diff adds reach the kernel
// before the whole table, only while online, and that pending denies are
// cleared after the table whether it was applied or refused.
func TestDiffDeniesGoFirst(t *testing.T) {
	added := []*vigilpb.EgressEntry{entry(40, "192.0.2.1/32", vigilpb.Verdict_VERDICT_DENY, nil)}
	tests := []struct {
		name    string
		online  bool
		diff    *vigilpb.TableDiff
		want    []string
		wantErr string
	}{
		{"online", true, &vigilpb.TableDiff{EgressAdded: added},
			[]string{"pend 1+0", "table", "clear"}, ""},
		{"offline waits for the table", false, &vigilpb.TableDiff{EgressAdded: added},
			[]string{"table", "clear"}, ""},
		{"refused table clears", true, &vigilpb.TableDiff{EgressAdded: added, CutPeersAdded: []string{"nope"}},
			[]string{"pend 1+0", "clear"}, "cut_peers"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t)
			f.a.ApplyTable(baseTable())
			if err := f.a.SetOnline(tt.online); err != nil {
				t.Fatal(err)
			}
			f.k.calls = nil
			tt.diff.BaseVersion, tt.diff.Version = 1, 2
			ack, err := f.a.ApplyDiff(tt.diff)
			if err != nil || !strings.Contains(ack.Error, tt.wantErr) || (tt.wantErr == "") != (ack.Error == "") {
				t.Fatalf("ack %v, err %v; want error ~%q", ack, err, tt.wantErr)
			}
			if !slices.Equal(f.k.calls, tt.want) {
				t.Errorf("kernel calls %v, want %v", f.k.calls, tt.want)
			}
		})
	}
}

func TestOnExecKillsListedExecutable(t *testing.T) {
	f := newFixture(t)
	other := filepath.Join(t.TempDir(), "fresh")
	os.WriteFile(other, []byte("new binary"), 0o755)
	freshProcs := proctable.New("/proc")
	sha, id, _ := freshProcs.HashFile(other)

	tab := baseTable()
	tab.KillOnExec = []string{sha}
	f.a.ApplyTable(tab)
	if kt := f.k.last(t); len(kt.KillOnExec) != 0 {
		t.Fatalf("kill list resolved before the file was seen: %v", kt.KillOnExec)
	}

	// The agent's table hashes the file at exec.
	f.procs.HashFile(other)
	f.k.live[77] = 7700
	killed, err := f.a.OnExec(proctable.Process{Task: proctable.Task{PID: 77, StartTimeNs: 7700, Exe: id}, Path: other, SHA256: sha})
	if err != nil || !killed {
		t.Fatalf("OnExec = %v, %v; want killed", killed, err)
	}
	if len(f.k.kills) != 1 || f.k.kills[0] != "77@7700 tree=true" {
		t.Errorf("kills %v", f.k.kills)
	}
	if kt := f.k.last(t); len(kt.KillOnExec) != 1 || kt.KillOnExec[0] != id {
		t.Errorf("kernel kill list %v, want [%v]", kt.KillOnExec, id)
	}

	writes := len(f.k.tables)
	killed, _ = f.a.OnExec(proctable.Process{Task: proctable.Task{PID: 78, Exe: f.id}, Path: f.exe, SHA256: f.sha})
	if killed || len(f.k.tables) != writes {
		t.Errorf("unlisted exec: killed %v, table writes %d -> %d", killed, writes, len(f.k.tables))
	}
}

// BenchmarkApplyTable1000 measures translating and handing the kernel a
// table of 1000 egress entries, 100 of them naming an executable by hash.
func BenchmarkApplyTable1000(b *testing.B) {
	procs := proctable.New("/proc")
	exe := filepath.Join(b.TempDir(), "tool")
	os.WriteFile(exe, []byte("tool"), 0o755)
	sha, _, _ := procs.HashFile(exe)
	a, err := New(Config{Kernel: &recordingKernel{}, Resolver: procs, StateDir: b.TempDir(), Scope: b.TempDir()})
	if err != nil {
		b.Fatal(err)
	}
	a.SetOnline(true)

	tab := &vigilpb.VerdictTable{DefaultEgress: vigilpb.Verdict_VERDICT_ALLOW}
	for i := 0; i < 1000; i++ {
		var s *vigilpb.Subject
		if i%10 == 0 {
			s = &vigilpb.Subject{ExecutableSha256: sha}
		}
		tab.Egress = append(tab.Egress, entry(uint32(i), fmt.Sprintf("10.%d.%d.0/24", i/256, i%256), vigilpb.Verdict_VERDICT_DENY, s))
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		tab.Version = uint64(i + 1)
		if ack := a.ApplyTable(tab); ack.Error != "" {
			b.Fatal(ack.Error)
		}
	}
}
