package spool

import (
	"os"
	"path/filepath"
	"testing"

	vigilpb "github.com/vigilsec/vigil/gen/vigil/v1"
)

// TestCorruptStateRebuilt checks that a state file that does not parse
// neither stops Open nor loses an event held: every one is read again from
// the oldest, with no gap, and sequence numbers go on above them.
func TestCorruptStateRebuilt(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, 0)
	if err != nil {
		t.Fatal(err)
	}
	appendN(t, s, 6, "a")
	s.Sync()
	s.Ack(2)
	s.Close()
	if err := os.WriteFile(filepath.Join(dir, stateFile), []byte("garbage\n"), 0o600); err != nil {
		t.Fatal(err)
	}

	s, err = Open(dir, 0)
	if err != nil {
		t.Fatalf("open with a corrupt state: %v", err)
	}
	defer s.Close()
	if r := s.Recovery(); !r.StateRebuilt || r.StateErr == nil {
		t.Errorf("recovery %+v, want the state rebuilt", r)
	}
	evs := readAll(t, s, 0)
	if len(evs) == 0 || evs[0].Seq > 3 || evs[len(evs)-1].Seq != 6 {
		t.Fatalf("after rebuild read %v, want every unacknowledged event through 6", seqs(evs))
	}
	wantConsecutive(t, evs, evs[0].Seq, 6)
	if seq, err := s.Append(&vigilpb.Event{}); err != nil || seq != 7 {
		t.Errorf("next append got seq %d err %v, want 7", seq, err)
	}
}

// TestCorruptStateNothingHeld checks that with no segment left, sequence
// numbers restart above any the lost state can have handed out, and stay
// there across a restart.
func TestCorruptStateNothingHeld(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, 0)
	if err != nil {
		t.Fatal(err)
	}
	appendN(t, s, 3, "a")
	s.Sync()
	s.Ack(3)
	s.Close()
	os.WriteFile(filepath.Join(dir, stateFile), []byte("acked=x dropped=0\n"), 0o600)

	s, err = Open(dir, 0)
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	s, err = Open(dir, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	seq, err := s.Append(&vigilpb.Event{})
	if err != nil || seq < 1<<60 {
		t.Fatalf("append after rebuild got seq %d err %v, want one far above 3", seq, err)
	}
	if st := s.Stats(); st.Pending != 1 {
		t.Errorf("pending %d, want 1", st.Pending)
	}
}

// TestCorruptRecordKeepsTheRest checks that a damaged record in the middle
// of a segment costs only itself: the records after it are kept, and a
// loss event counts the one lost.
func TestCorruptRecordKeepsTheRest(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, 0)
	if err != nil {
		t.Fatal(err)
	}
	appendN(t, s, 5, "a")
	s.Close()
	segs, _ := filepath.Glob(filepath.Join(dir, segmentPrefix+"*"))
	b, err := os.ReadFile(segs[0])
	if err != nil {
		t.Fatal(err)
	}
	third := 0
	for range 2 {
		_, _, n, _ := recordAt(b[third:])
		third += n
	}
	b[third+headerBytes] ^= 0xff // flip a payload byte of record 3
	os.WriteFile(segs[0], b, 0o600)

	s, err = Open(dir, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	evs := readAll(t, s, 0)
	got := seqs(evs)
	want := []uint64{1, 2, 4, 5, 6}
	if len(got) != len(want) {
		t.Fatalf("read %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("read %v, want %v", got, want)
		}
	}
	if loss := evs[4]; loss.Kind != vigilpb.EventKind_EVENT_KIND_LOSS || loss.Lost != 1 {
		t.Errorf("last event %v, want a loss of 1", loss)
	}
	if r := s.Recovery(); r.LostEvents != 1 || r.DamagedBytes == 0 {
		t.Errorf("recovery %+v, want 1 event and its bytes lost", r)
	}
}
