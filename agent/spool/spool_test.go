package spool

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	vigilpb "github.com/vigilsec/vigil/gen/vigil/v1"
)

func appendN(t *testing.T, s *Spool, n int, msg string) {
	t.Helper()
	for i := 0; i < n; i++ {
		ev := &vigilpb.Event{Kind: vigilpb.EventKind_EVENT_KIND_EXEC, Message: fmt.Sprintf("%s-%d", msg, i)}
		if _, err := s.Append(ev); err != nil {
			t.Fatalf("append: %v", err)
		}
	}
}

func readAll(t *testing.T, s *Spool, after uint64) []*vigilpb.Event {
	t.Helper()
	var out []*vigilpb.Event
	for {
		evs, err := s.Read(after, 7)
		if err != nil {
			t.Fatalf("read: %v", err)
		}
		if len(evs) == 0 {
			return out
		}
		out = append(out, evs...)
		after = evs[len(evs)-1].Seq
	}
}

func seqs(evs []*vigilpb.Event) []uint64 {
	out := make([]uint64, len(evs))
	for i, ev := range evs {
		out[i] = ev.Seq
	}
	return out
}

func wantConsecutive(t *testing.T, evs []*vigilpb.Event, first, last uint64) {
	t.Helper()
	if uint64(len(evs)) != last-first+1 {
		t.Fatalf("got seqs %v, want %d..%d", seqs(evs), first, last)
	}
	for i, ev := range evs {
		if ev.Seq != first+uint64(i) {
			t.Fatalf("got seqs %v, want %d..%d", seqs(evs), first, last)
		}
	}
}

func TestReadOnlySynced(t *testing.T) {
	s, err := Open(t.TempDir(), 0)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()

	appendN(t, s, 5, "a")
	if evs := readAll(t, s, 0); len(evs) != 0 {
		t.Fatalf("read %d unsynced events, want none", len(evs))
	}
	if err := s.Sync(); err != nil {
		t.Fatal(err)
	}
	evs := readAll(t, s, 0)
	wantConsecutive(t, evs, 1, 5)
	if evs[2].Message != "a-2" {
		t.Errorf("event 3 message %q, want a-2", evs[2].Message)
	}
}

// TestReopenReplaysUnackedOnce models an agent that is killed after sending
// some events and getting an ack for part of them: the restarted agent
// continues the sequence and resends exactly what was not acknowledged.
func TestReopenReplaysUnackedOnce(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, 0)
	if err != nil {
		t.Fatal(err)
	}
	appendN(t, s, 10, "a")
	if err := s.Sync(); err != nil {
		t.Fatal(err)
	}
	if err := s.Ack(4); err != nil {
		t.Fatal(err)
	}
	appendN(t, s, 3, "b") // written, never synced: a kill -9 keeps them (page cache)
	// No Close: the process "dies" here.

	s2, err := Open(dir, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	wantConsecutive(t, readAll(t, s2, 0), 5, 13)

	appendN(t, s2, 2, "c")
	if err := s2.Sync(); err != nil {
		t.Fatal(err)
	}
	all := readAll(t, s2, 0)
	wantConsecutive(t, all, 5, 15)
	if err := s2.Ack(15); err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, s2, 0); len(got) != 0 {
		t.Fatalf("after full ack read %v, want nothing", seqs(got))
	}
	if st := s2.Stats(); st.Pending != 0 || st.Last != 15 {
		t.Errorf("stats %+v, want pending 0, last 15", st)
	}
}

func TestSequenceSurvivesFullAck(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, 0)
	if err != nil {
		t.Fatal(err)
	}
	appendN(t, s, 3, "a")
	s.Sync()
	if err := s.Ack(3); err != nil {
		t.Fatal(err)
	}
	s.Close()

	s2, err := Open(dir, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	seq, err := s2.Append(&vigilpb.Event{})
	if err != nil {
		t.Fatal(err)
	}
	if seq != 4 {
		t.Fatalf("first seq after restart = %d, want 4", seq)
	}
}

func TestTornTailIsCut(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, 0)
	if err != nil {
		t.Fatal(err)
	}
	appendN(t, s, 4, "a")
	s.Close()

	segs, _ := filepath.Glob(filepath.Join(dir, segmentPrefix+"*"))
	if len(segs) != 1 {
		t.Fatalf("segments %v, want 1", segs)
	}
	f, err := os.OpenFile(segs[0], os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.Write([]byte{200, 0, 0, 0, 1, 2, 3}) // a record cut mid-header
	f.Close()

	s2, err := Open(dir, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	appendN(t, s2, 1, "b")
	s2.Sync()
	evs := readAll(t, s2, 0)
	wantConsecutive(t, evs, 1, 6)
	if evs[4].Kind != vigilpb.EventKind_EVENT_KIND_LOSS || evs[4].Lost != 1 || evs[5].Message != "b-0" {
		t.Errorf("after the torn tail got %v, %v; want a loss of 1, then b-0", evs[4], evs[5])
	}
	if r := s2.Recovery(); r.DamagedBytes != 7 || r.LostEvents != 1 || r.StateRebuilt {
		t.Errorf("recovery %+v, want 7 bytes and 1 event lost", r)
	}
}

func TestBoundedDropsOldestAndCounts(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, 3*segmentBytes)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()

	big := string(make([]byte, 4000))
	const n = 2000 // ~8 MB, far over the 3 MB limit
	for i := 0; i < n; i++ {
		if _, err := s.Append(&vigilpb.Event{Message: big}); err != nil {
			t.Fatal(err)
		}
	}
	s.Sync()

	st := s.Stats()
	if st.Bytes > 3*segmentBytes {
		t.Errorf("spool holds %d bytes, limit %d", st.Bytes, 3*segmentBytes)
	}
	evs := readAll(t, s, 0)
	var lost uint64
	for _, ev := range evs {
		lost += ev.Lost
	}
	if lost == 0 || lost != st.Dropped {
		t.Fatalf("loss events count %d, stats dropped %d; want equal and > 0", lost, st.Dropped)
	}
	// Every event is either still in the spool or counted as lost.
	if kept := uint64(len(evs)) - lossEvents(evs); kept+lost != n {
		t.Errorf("kept %d + lost %d != appended %d", kept, lost, n)
	}

	s.Close()
	s2, err := Open(dir, 3*segmentBytes)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	if got := s2.Stats().Dropped; got != st.Dropped {
		t.Errorf("dropped after reopen %d, want %d", got, st.Dropped)
	}
}

func lossEvents(evs []*vigilpb.Event) uint64 {
	var n uint64
	for _, ev := range evs {
		if ev.Kind == vigilpb.EventKind_EVENT_KIND_LOSS {
			n++
		}
	}
	return n
}

func BenchmarkAppend(b *testing.B) {
	s, err := Open(b.TempDir(), 0)
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	ev := &vigilpb.Event{Kind: vigilpb.EventKind_EVENT_KIND_CONNECT, Process: &vigilpb.Process{Pid: 42, Executable: "/usr/bin/curl"}}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := s.Append(ev); err != nil {
			b.Fatal(err)
		}
		if i%64 == 0 {
			s.Sync()
			s.Ack(ev.Seq)
		}
	}
}
