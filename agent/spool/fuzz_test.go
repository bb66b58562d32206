package spool

import (
	"os"
	"path/filepath"
	"testing"

	"google.golang.org/protobuf/proto"

	vigilpb "github.com/vigilsec/vigil/gen/vigil/v1"
)

// FuzzOpenSegment opens a spool whose segment holds two good records
// followed by arbitrary bytes, as a crash or a damaged disk could leave it.
// Open must keep the good records, cut what does not check out, and hand
// out sequence numbers above every record it kept.
func FuzzOpenSegment(f *testing.F) {
	f.Add([]byte{})
	f.Add([]byte{1, 2, 3})
	f.Add(encodeRecord(3, []byte("not a protobuf")))
	f.Add(encodeRecord(3, mustMarshal(&vigilpb.Event{Kind: vigilpb.EventKind_EVENT_KIND_LOSS, Lost: 5}))[:20])
	f.Add(append(encodeRecord(3, nil), 0xff, 0xff, 0xff, 0x7f))

	f.Fuzz(func(t *testing.T, tail []byte) {
		dir := t.TempDir()
		var seg []byte
		for seq := uint64(1); seq <= 2; seq++ {
			ev := &vigilpb.Event{Seq: seq, Kind: vigilpb.EventKind_EVENT_KIND_EXEC, Message: "kept"}
			seg = append(seg, encodeRecord(seq, mustMarshal(ev))...)
		}
		name := filepath.Join(dir, segmentPrefix+"00000000000000000001"+segmentSuffix)
		if err := os.WriteFile(name, append(seg, tail...), 0o600); err != nil {
			t.Fatal(err)
		}

		s, err := Open(dir, 0)
		if err != nil {
			return
		}
		defer s.Close()
		evs, err := s.Read(0, 1<<20)
		if err != nil {
			t.Fatalf("read: %v", err)
		}
		if len(evs) < 2 || evs[0].Message != "kept" || evs[1].Message != "kept" {
			t.Fatalf("good records lost: %v", evs)
		}
		var top uint64
		for _, ev := range evs {
			top = max(top, ev.Seq)
		}
		seq, err := s.Append(&vigilpb.Event{Kind: vigilpb.EventKind_EVENT_KIND_EXIT})
		if err != nil {
			t.Fatalf("append after open: %v", err)
		}
		if seq <= top {
			t.Fatalf("append got seq %d, not above the kept %d", seq, top)
		}
	})
}

func mustMarshal(ev *vigilpb.Event) []byte {
	b, err := proto.Marshal(ev)
	if err != nil {
		panic(err)
	}
	return b
}

// A record whose checksum holds but whose payload does not decode must not
// wedge the spool: it reads as one lost event and the records after it
// still come out.
func TestUndecodableRecordReadsAsLoss(t *testing.T) {
	dir := t.TempDir()
	seg := encodeRecord(1, mustMarshal(&vigilpb.Event{Seq: 1, Message: "before"}))
	seg = append(seg, encodeRecord(2, []byte{0xff, 0xff, 0xff})...)
	seg = append(seg, encodeRecord(3, mustMarshal(&vigilpb.Event{Seq: 3, Message: "after"}))...)
	name := filepath.Join(dir, segmentPrefix+"00000000000000000001"+segmentSuffix)
	if err := os.WriteFile(name, seg, 0o600); err != nil {
		t.Fatal(err)
	}

	s, err := Open(dir, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	evs := readAll(t, s, 0)
	wantConsecutive(t, evs, 1, 3)
	if evs[1].Kind != vigilpb.EventKind_EVENT_KIND_LOSS || evs[1].Lost != 1 || evs[2].Message != "after" {
		t.Fatalf("got %v", evs)
	}
}
