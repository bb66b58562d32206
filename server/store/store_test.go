package store

import (
	"bytes"
	"errors"
	"fmt"
	"testing"
	"time"

	"go.uber.org/goleak"

	vigilpb "github.com/vigilsec/vigil/gen/vigil/v1"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func open(t *testing.T, dir string, ret Retention) *Store {
	t.Helper()
	s, err := Open(Options{Dir: dir, Retention: ret})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func events(seqs ...uint64) []*vigilpb.Event {
	var out []*vigilpb.Event
	for _, seq := range seqs {
		out = append(out, &vigilpb.Event{Seq: seq, Kind: vigilpb.EventKind_EVENT_KIND_EXEC,
			TimeUnixNano: int64(1000 + seq)})
	}
	return out
}

func TestAppendEventsDedupe(t *testing.T) {
	s := open(t, t.TempDir(), Retention{})
	steps := []struct {
		name    string
		agent   string
		seqs    []uint64
		stored  int
		wantAck uint64
	}{
		{name: "first batch", agent: "a", seqs: []uint64{1, 2, 3}, stored: 3, wantAck: 3},
		{name: "replayed batch", agent: "a", seqs: []uint64{1, 2, 3}, stored: 0, wantAck: 3},
		{name: "overlap", agent: "a", seqs: []uint64{3, 4}, stored: 1, wantAck: 4},
		{name: "gap holds the ack", agent: "a", seqs: []uint64{6, 7}, stored: 2, wantAck: 4},
		{name: "replay above the mark", agent: "a", seqs: []uint64{6, 7}, stored: 0, wantAck: 4},
		{name: "gap filled", agent: "a", seqs: []uint64{5}, stored: 1, wantAck: 7},
		{name: "duplicate inside a batch", agent: "b", seqs: []uint64{1, 1, 2}, stored: 2, wantAck: 2},
		{name: "agents are separate", agent: "c", seqs: []uint64{1}, stored: 1, wantAck: 1},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			stored, ack, err := s.AppendEvents(st.agent, events(st.seqs...))
			if err != nil {
				t.Fatal(err)
			}
			if len(stored) != st.stored || ack != st.wantAck {
				t.Fatalf("stored %d ack %d, want %d ack %d", len(stored), ack, st.stored, st.wantAck)
			}
		})
	}

	all, err := s.QueryEvents(EventFilter{Agent: "a"})
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != 7 {
		t.Fatalf("agent a has %d stored events, want 7", len(all))
	}
	if _, _, err := s.AppendEvents("a", events(0)); !errors.Is(err, ErrZeroSeq) {
		t.Fatalf("seq 0: err %v, want ErrZeroSeq", err)
	}
}

func TestResetSequences(t *testing.T) {
	s := open(t, t.TempDir(), Retention{})
	if _, _, err := s.AppendEvents("a", events(1, 2)); err != nil {
		t.Fatal(err)
	}
	if err := s.ResetSequences("a"); err != nil {
		t.Fatal(err)
	}
	stored, ack, err := s.AppendEvents("a", events(1))
	if err != nil || len(stored) != 1 || ack != 1 {
		t.Fatalf("after reset: stored %d ack %d err %v, want 1 1", len(stored), ack, err)
	}
}

func TestQueryEventsFilter(t *testing.T) {
	s := open(t, t.TempDir(), Retention{})
	if _, _, err := s.AppendEvents("a", events(1, 2, 3, 4)); err != nil {
		t.Fatal(err)
	}
	srv := &vigilpb.Event{Kind: vigilpb.EventKind_EVENT_KIND_POLICY, TimeUnixNano: 2000}
	if err := s.RecordEvent(srv); err != nil || srv.ServerId == "" {
		t.Fatalf("record event: %v id %q", err, srv.ServerId)
	}
	tests := []struct {
		name string
		f    EventFilter
		want []int64
	}{
		{name: "all", f: EventFilter{}, want: []int64{1001, 1002, 1003, 1004, 2000}},
		{name: "limit keeps newest", f: EventFilter{Limit: 2}, want: []int64{1004, 2000}},
		{name: "since", f: EventFilter{Since: 1003}, want: []int64{1003, 1004, 2000}},
		{name: "agent", f: EventFilter{Agent: "a", Since: 1004}, want: []int64{1004}},
		{name: "kind", f: EventFilter{Kinds: []vigilpb.EventKind{vigilpb.EventKind_EVENT_KIND_POLICY}}, want: []int64{2000}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := s.QueryEvents(tt.f)
			if err != nil {
				t.Fatal(err)
			}
			var times []int64
			for _, ev := range got {
				times = append(times, ev.TimeUnixNano)
			}
			if fmt.Sprint(times) != fmt.Sprint(tt.want) {
				t.Fatalf("got %v, want %v", times, tt.want)
			}
		})
	}
}

func TestRetention(t *testing.T) {
	t.Run("age", func(t *testing.T) {
		s := open(t, t.TempDir(), Retention{MaxAge: time.Hour})
		now := time.Now()
		old := &vigilpb.Event{TimeUnixNano: now.Add(-2 * time.Hour).UnixNano()}
		fresh := &vigilpb.Event{TimeUnixNano: now.UnixNano()}
		for _, ev := range []*vigilpb.Event{old, fresh} {
			if err := s.RecordEvent(ev); err != nil {
				t.Fatal(err)
			}
		}
		if err := s.Prune(now); err != nil {
			t.Fatal(err)
		}
		got, _ := s.QueryEvents(EventFilter{})
		if len(got) != 1 || got[0].ServerId != fresh.ServerId {
			t.Fatalf("after prune: %v, want only the fresh event", got)
		}
	})
	t.Run("size", func(t *testing.T) {
		s := open(t, t.TempDir(), Retention{MaxBytes: 4000})
		for i := range 200 {
			ev := &vigilpb.Event{TimeUnixNano: int64(i + 1), Message: "0123456789012345678901234567890123456789"}
			if err := s.RecordEvent(ev); err != nil {
				t.Fatal(err)
			}
		}
		got, _ := s.QueryEvents(EventFilter{})
		if len(got) == 0 || len(got) >= 200 || got[len(got)-1].TimeUnixNano != 200 {
			t.Fatalf("kept %d events, want the newest few", len(got))
		}
		if s.evBytes > 4000 {
			t.Fatalf("event log is %d bytes, bound 4000", s.evBytes)
		}
	})
}

func TestInstructions(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, Retention{})
	for i := range 3 {
		ins := &vigilpb.Instruction{Kind: vigilpb.InstructionKind_INSTRUCTION_KIND_KILL, Pid: uint32(i)}
		seq, err := s.AddInstruction("a", ins)
		if err != nil || seq != uint64(i+1) {
			t.Fatalf("add: seq %d err %v, want %d", seq, err, i+1)
		}
	}
	ack := &vigilpb.InstructionAck{Seq: 2, Outcome: vigilpb.InstructionOutcome_INSTRUCTION_OUTCOME_DONE}
	if _, first, err := s.AckInstruction("a", ack); err != nil || !first {
		t.Fatalf("ack: first %v err %v", first, err)
	}
	if _, first, _ := s.AckInstruction("a", ack); first {
		t.Fatal("second ack of one instruction reported as first")
	}
	if _, _, err := s.AckInstruction("a", &vigilpb.InstructionAck{Seq: 9}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("unknown seq: err %v, want ErrNotFound", err)
	}
	s.Close()

	s = open(t, dir, Retention{})
	pending, err := s.PendingInstructions("a")
	if err != nil || len(pending) != 2 || pending[0].Seq != 1 || pending[1].Seq != 3 {
		t.Fatalf("pending after reopen: %v err %v, want seqs 1 and 3", pending, err)
	}
	if seq, _ := s.AddInstruction("a", &vigilpb.Instruction{}); seq != 4 {
		t.Fatalf("seq after reopen %d, want 4", seq)
	}
}

func TestConsumeToken(t *testing.T) {
	s := open(t, t.TempDir(), Retention{})
	now := time.Now()
	hash := []byte("0123456789abcdef0123456789abcdef")
	must(t, s.PutToken("live", TokenRecord{SecretHash: hash, Expires: now.Add(time.Hour)}))
	must(t, s.PutToken("old", TokenRecord{SecretHash: hash, Expires: now.Add(-time.Second)}))

	tests := []struct {
		name string
		id   string
		hash []byte
		want error
	}{
		{name: "unknown id", id: "nope", hash: hash, want: ErrTokenUnknown},
		{name: "wrong secret", id: "live", hash: []byte("x"), want: ErrTokenUnknown},
		{name: "expired", id: "old", hash: hash, want: ErrTokenExpired},
		{name: "valid", id: "live", hash: hash, want: nil},
		{name: "reused", id: "live", hash: hash, want: ErrTokenUsed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := s.ConsumeToken(tt.id, tt.hash, "agent", now); !errors.Is(err, tt.want) {
				t.Fatalf("err %v, want %v", err, tt.want)
			}
		})
	}
}

func TestNamespace(t *testing.T) {
	s := open(t, t.TempDir(), Retention{})
	a, b := s.Namespace("a/"), s.Namespace("b/")
	must(t, a.Set([]byte("x/2"), []byte("two")))
	must(t, a.Set([]byte("x/1"), []byte("one")))
	must(t, a.Set([]byte("y"), []byte("why")))
	must(t, b.Set([]byte("x/1"), []byte("other")))

	var got []string
	must(t, a.Scan([]byte("x/"), func(k, v []byte) error {
		got = append(got, string(k)+"="+string(v))
		return nil
	}))
	if fmt.Sprint(got) != "[x/1=one x/2=two]" {
		t.Fatalf("scan: %v", got)
	}

	must(t, a.Delete([]byte("x/1")))
	if _, ok, err := a.Get([]byte("x/1")); ok || err != nil {
		t.Fatalf("deleted key: ok %v err %v", ok, err)
	}
	if v, ok, _ := b.Get([]byte("x/1")); !ok || string(v) != "other" {
		t.Fatalf("other namespace: %q %v", v, ok)
	}
}

func TestNamespaceSetMany(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, Retention{})
	ns := s.Namespace("a/")
	var keys, values [][]byte
	for i := range 5000 {
		keys = append(keys, []byte(fmt.Sprintf("k/%05d", i)))
		values = append(values, bytes.Repeat([]byte{byte(i)}, 4096))
	}
	must(t, ns.SetMany(keys, values))
	if err := ns.SetMany(keys[:2], values[:1]); err == nil {
		t.Errorf("SetMany with fewer values than keys succeeded")
	}
	s.Close()

	s = open(t, dir, Retention{})
	n := 0
	must(t, s.Namespace("a/").Scan([]byte("k/"), func(k, v []byte) error {
		if !bytes.Equal(v, values[n]) || string(k) != string(keys[n]) {
			t.Fatalf("entry %d after reopen: %s, %d bytes", n, k, len(v))
		}
		n++
		return nil
	}))
	if n != len(keys) {
		t.Errorf("%d entries after reopen, want %d", n, len(keys))
	}
}

func TestAgentsAndAudit(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, Retention{})
	must(t, s.PutAgent(AgentRecord{Name: "b", Serial: "2"}))
	must(t, s.PutAgent(AgentRecord{Name: "a", Serial: "1", Revoked: true}))
	must(t, s.AppendAudit(AuditRecord{Time: time.Now(), Actor: "admin/x(admin)", Action: "RevokeAgent",
		Target: "a", Result: "ok"}))
	s.Close()

	s = open(t, dir, Retention{})
	agents, err := s.Agents()
	if err != nil || len(agents) != 2 || agents[0].Name != "a" || !agents[0].Revoked {
		t.Fatalf("agents after reopen: %+v err %v", agents, err)
	}
	if _, err := s.Agent("zz"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("unknown agent: %v", err)
	}
	audit, err := s.Audit()
	if err != nil || len(audit) != 1 || audit[0].Action != "RevokeAgent" {
		t.Fatalf("audit after reopen: %+v err %v", audit, err)
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// TestAppendBatchDropped checks that a drop mark moves the acknowledgement
// past events that will never come, durably, and that events above the mark
// already stored are neither lost nor stored again.
func TestAppendBatchDropped(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	steps := []struct {
		name    string
		seqs    []uint64
		through uint64
		stored  int
		wantAck uint64
	}{
		{name: "before the drop", seqs: []uint64{1, 2}, stored: 2, wantAck: 2},
		{name: "above the gap waits", seqs: []uint64{9, 10}, stored: 2, wantAck: 2},
		{name: "drop mark passes the gap", seqs: []uint64{8}, through: 7, stored: 1, wantAck: 10},
		{name: "replay after the drop", seqs: []uint64{8, 9, 10, 11}, through: 7, stored: 1, wantAck: 11},
		{name: "stale drop mark", seqs: []uint64{12}, through: 5, stored: 1, wantAck: 12},
	}
	for _, st := range steps {
		stored, ack, err := s.AppendBatch("a", Batch{Events: events(st.seqs...), DroppedThrough: st.through})
		if err != nil || len(stored) != st.stored || ack != st.wantAck {
			t.Fatalf("%s: stored %d ack %d err %v, want %d ack %d", st.name, len(stored), ack, err,
				st.stored, st.wantAck)
		}
	}
	s.Close()

	s = open(t, dir, Retention{})
	if stored, ack, err := s.AppendEvents("a", events(12, 13)); err != nil || len(stored) != 1 || ack != 13 {
		t.Fatalf("after reopen: stored %d ack %d err %v, want 1 ack 13", len(stored), ack, err)
	}
}
