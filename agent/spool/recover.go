package spool

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"os"
	"time"

	"google.golang.org/protobuf/proto"

	vigilpb "github.com/vigilsec/vigil/gen/vigil/v1"
)

// Recovery is what Open repaired in a damaged spool.
type Recovery struct {
	// StateRebuilt says the state file did not parse and was rebuilt from
	// the segments; StateErr is why. Every event still held is sent again
	// (the server skips those it stored).
	StateRebuilt bool
	StateErr     error
	// DamagedBytes are bytes of segments that formed no good record and
	// were cut out; LostEvents counts the events lost with them, which a
	// loss event in the spool reports.
	DamagedBytes int64
	LostEvents   uint64

	tornTail bool // the newest segment ended in damage
}

// Recovery returns what Open repaired; the zero value means nothing was.
func (s *Spool) Recovery() Recovery {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.repair
}

// damage is what scanSegment cut out of one segment.
type damage struct {
	bytes   int64  // bytes cut
	missing uint64 // sequence numbers missing between the records kept
	tail    bool   // the cut reached the segment's end
}

// scanSegment reads a segment's records. Bytes that form no good record
// are cut out: the scan looks for the next good record after them and
// keeps it and those that follow, rewriting the segment without the bad
// bytes when there were any.
func scanSegment(path string) (segment, damage, error) {
	buf, err := os.ReadFile(path)
	if err != nil {
		return segment{}, damage{}, fmt.Errorf("read spool segment: %w", err)
	}
	seg := segment{path: path, first: 1}
	var dmg damage
	var kept []byte
	for off := 0; off < len(buf); {
		seq, payload, n, ok := recordAt(buf[off:])
		if !ok || (len(kept) > 0 && seq <= seg.last) {
			skip := resync(buf[off+1:], seg.last)
			dmg.bytes += int64(1 + skip)
			off += 1 + skip
			dmg.tail = off == len(buf)
			continue
		}
		if len(kept) > 0 {
			dmg.missing += seq - seg.last - 1
		}
		seg.add(seq, payload, int64(n), len(kept) == 0)
		kept = append(kept, buf[off:off+n]...)
		off += n
	}
	if dmg.bytes > 0 {
		if err := WriteFileAtomic(path, kept, 0o600); err != nil {
			return segment{}, damage{}, fmt.Errorf("cut damage from spool segment: %w", err)
		}
	}
	return seg, dmg, nil
}

// resync returns how many bytes of buf precede the next good record with a
// sequence above last, or len(buf) when there is none.
func resync(buf []byte, last uint64) int {
	for i := range buf {
		if seq, _, _, ok := recordAt(buf[i:]); ok && seq > last {
			return i
		}
	}
	return len(buf)
}

// recordAt parses the record at the start of buf, as readRecord does, without
// copying: its sequence, payload and size, and whether it checks out.
func recordAt(buf []byte) (seq uint64, payload []byte, n int, ok bool) {
	if len(buf) < headerBytes {
		return 0, nil, 0, false
	}
	size := binary.LittleEndian.Uint32(buf[0:])
	if size > maxRecordBytes || int(size) > len(buf)-headerBytes {
		return 0, nil, 0, false
	}
	n = headerBytes + int(size)
	if crc32.Checksum(buf[8:n], castagnoli) != binary.LittleEndian.Uint32(buf[4:]) {
		return 0, nil, 0, false
	}
	return binary.LittleEndian.Uint64(buf[8:]), buf[headerBytes:n], n, true
}

// add counts one good record into seg.
func (seg *segment) add(seq uint64, payload []byte, n int64, first bool) {
	ev := &vigilpb.Event{}
	if proto.Unmarshal(payload, ev) == nil && ev.Kind == vigilpb.EventKind_EVENT_KIND_LOSS {
		seg.lossRecords, seg.lost = seg.lossRecords+1, seg.lost+ev.Lost
	}
	if first {
		seg.first = seq
	}
	seg.last, seg.size = seq, seg.size+n
}

// rebuildState replaces a state file that did not parse. Every event
// still held is sent again, from the oldest: the server skips those it
// stored, and the gap before the oldest tells it to wait for none older.
// With no segment left, appends start at the current time in nanoseconds,
// above any sequence number the lost state can have handed out, so the
// server never takes a new event for one it stored.
func (s *Spool) rebuildState(cause error) error {
	s.acked, s.dropped = 0, 0
	if len(s.segs) == 0 {
		s.base = uint64(time.Now().UnixNano())
		s.next, s.durable = s.base, s.base-1
	}
	s.repair.StateRebuilt, s.repair.StateErr = true, cause
	return s.saveState()
}

// reportDamage appends a loss event counting the events lost to damage:
// the sequence numbers missing around cut bytes, and one for a damaged
// tail of the newest segment, which held at most the record being written.
func (s *Spool) reportDamage() error {
	if s.repair.tornTail {
		s.repair.LostEvents++
	}
	if s.repair.DamagedBytes == 0 && s.repair.LostEvents == 0 {
		return nil
	}
	loss := &vigilpb.Event{Kind: vigilpb.EventKind_EVENT_KIND_LOSS, Lost: s.repair.LostEvents,
		TimeUnixNano: time.Now().UnixNano(),
		Message: fmt.Sprintf("spool damaged: %d bytes unreadable, %d events lost",
			s.repair.DamagedBytes, s.repair.LostEvents)}
	if _, err := s.appendLocked(loss); err != nil {
		return err
	}
	return s.Sync()
}
