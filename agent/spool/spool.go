// Package spool is the agent's crash-safe event log. Every event gets a
// persistent per-agent sequence number and is written to disk before it is
// sent; it leaves the disk only after the server acknowledged it. The agent's
// run loop owns one Spool per data directory; the Spool owns the segment files
// and the state file in that directory.
package spool

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	vigilpb "github.com/vigilsec/vigil/gen/vigil/v1"
	"google.golang.org/protobuf/proto"
)

const (
	// DefaultLimit is the default bound on the spool's size on disk.
	DefaultLimit = 64 << 20
	// segmentBytes is the size at which a segment is closed and a new one begun.
	segmentBytes = 1 << 20
	// headerBytes is a record's header: payload length, CRC-32C, sequence.
	headerBytes = 16
	// maxRecordBytes bounds one record's payload; a larger length is corruption.
	maxRecordBytes = 16 << 20

	segmentPrefix = "seg-"
	segmentSuffix = ".log"
	stateFile     = "state"
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Spool is an append-only, segmented, bounded log of events on disk.
//
// Records are written with one write(2) each, so a killed agent loses nothing
// it appended; Sync makes them durable against a machine crash, and Read
// returns only synced records, so nothing is sent that a crash could take
// back. All methods are safe for concurrent use.
type Spool struct {
	dir   string
	limit int64

	mu      sync.Mutex
	segs    []segment // oldest first; guarded by mu
	cur     *os.File  // the newest segment, open for append; guarded by mu
	next    uint64    // sequence number of the next append; guarded by mu
	durable uint64    // highest sequence fsynced; guarded by mu
	acked   uint64    // highest sequence the server stored; guarded by mu
	base    uint64    // lowest sequence an append may take; guarded by mu
	dropped uint64    // events dropped to stay within the limit; guarded by mu
	repair  Recovery  // what Open repaired; guarded by mu
	size    int64     // bytes in all segments; guarded by mu
	cursor  cursor    // where the last Read stopped; guarded by mu
}

// segment is one file of records with consecutive sequence numbers.
type segment struct {
	path        string
	first, last uint64 // last < first while empty
	size        int64
	lossRecords uint64 // loss events in the segment
	lost        uint64 // events those loss events count
}

// cursor remembers where a Read stopped so the next one resumes there.
type cursor struct {
	seq    uint64
	path   string
	offset int64
}

// Open opens or creates the spool in dir (created 0700 when missing). limit
// bounds the bytes on disk; 0 means DefaultLimit. Damage does not stop it:
// bytes of a segment that form no good record (a torn tail left by a crash,
// a damaged disk) are cut out, keeping the records around them, and a loss
// event counts the events they held; a state file that does not parse is
// rebuilt from the segments. Recovery says what was repaired.
func Open(dir string, limit int64) (*Spool, error) {
	if limit <= 0 {
		limit = DefaultLimit
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create spool dir: %w", err)
	}
	s := &Spool{dir: dir, limit: limit}
	stateErr, err := s.loadState()
	if err != nil {
		return nil, err
	}
	if err := s.loadSegments(); err != nil {
		return nil, err
	}
	if stateErr != nil {
		if err := s.rebuildState(stateErr); err != nil {
			return nil, err
		}
	}
	if err := s.reportDamage(); err != nil {
		return nil, err
	}
	return s, s.dropAcked()
}

// Close syncs and closes the spool.
func (s *Spool) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()

	if s.cur == nil {
		return nil
	}
	err := s.cur.Sync()
	if cerr := s.cur.Close(); err == nil {
		err = cerr
	}
	s.cur = nil
	return err
}

// Append assigns ev the next sequence number (setting ev.Seq) and writes it.
// When the spool grows past its limit, the oldest segment is dropped and a
// loss event counting the dropped events is appended after ev.
func (s *Spool) Append(ev *vigilpb.Event) (uint64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()

	seq, err := s.appendLocked(ev)
	if err != nil {
		return 0, err
	}
	return seq, s.enforceLimit()
}

// Sync makes every appended record durable and readable.
func (s *Spool) Sync() error {
	s.mu.Lock()
	defer s.mu.Unlock()

	if s.cur == nil || s.durable == s.next-1 {
		return nil
	}
	if err := s.cur.Sync(); err != nil {
		return fmt.Errorf("sync spool: %w", err)
	}
	s.durable = s.next - 1
	return nil
}

// Ack records that the server stored every event up to seq; those events
// are deleted from disk (whole segments at a time) and never read again.
func (s *Spool) Ack(seq uint64) error {
	s.mu.Lock()
	defer s.mu.Unlock()

	if seq > s.next-1 {
		seq = s.next - 1
	}
	if seq <= s.acked {
		return nil
	}
	s.acked = seq
	if err := s.saveState(); err != nil {
		return err
	}
	return s.dropAcked()
}

// Stats describes the spool for metrics and counters.
type Stats struct {
	Bytes   int64  // bytes on disk
	Pending uint64 // events appended and not acknowledged
	Acked   uint64 // highest acknowledged sequence
	Last    uint64 // highest sequence assigned
	Dropped uint64 // events dropped to stay within the limit, ever
}

// Stats returns the spool's current figures.
func (s *Spool) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()

	held := s.next
	if len(s.segs) > 0 {
		held = s.segs[0].first
	}
	return Stats{
		Bytes: s.size, Pending: s.next - max(s.acked+1, held), Acked: s.acked,
		Last: s.next - 1, Dropped: s.dropped,
	}
}

// Read returns up to max synced, unacknowledged events with a sequence
// number above after, in order. Events dropped by the size limit are skipped.
func (s *Spool) Read(after uint64, max int) ([]*vigilpb.Event, error) {
	s.mu.Lock()
	defer s.mu.Unlock()

	if after < s.acked {
		after = s.acked
	}
	var out []*vigilpb.Event
	for _, seg := range s.segs {
		if seg.last <= after || seg.first > s.durable || len(out) >= max {
			continue
		}
		evs, err := s.readSegment(seg, after, max-len(out))
		if err != nil {
			return nil, err
		}
		out = append(out, evs...)
	}
	return out, nil
}

// appendLocked writes one record; the caller holds mu.
func (s *Spool) appendLocked(ev *vigilpb.Event) (uint64, error) {
	seq := s.next
	ev.Seq = seq
	payload, err := proto.Marshal(ev)
	if err != nil {
		return 0, fmt.Errorf("encode event %d: %w", seq, err)
	}
	if err := s.ensureSegment(seq, int64(len(payload))); err != nil {
		return 0, err
	}

	rec := encodeRecord(seq, payload)
	if _, err := s.cur.Write(rec); err != nil {
		return 0, fmt.Errorf("write spool record %d: %w", seq, err)
	}
	last := &s.segs[len(s.segs)-1]
	last.last, last.size = seq, last.size+int64(len(rec))
	if ev.Kind == vigilpb.EventKind_EVENT_KIND_LOSS {
		last.lossRecords, last.lost = last.lossRecords+1, last.lost+ev.Lost
	}
	s.size += int64(len(rec))
	s.next++
	return seq, nil
}

// ensureSegment opens a new segment when there is none or the newest is full.
func (s *Spool) ensureSegment(seq uint64, n int64) error {
	if s.cur != nil && s.segs[len(s.segs)-1].size+n+headerBytes <= segmentBytes {
		return nil
	}
	if s.cur != nil {
		if err := s.cur.Sync(); err != nil {
			return fmt.Errorf("sync spool segment: %w", err)
		}
		s.cur.Close()
		s.cur = nil
	}

	path := filepath.Join(s.dir, fmt.Sprintf("%s%020d%s", segmentPrefix, seq, segmentSuffix))
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("create spool segment: %w", err)
	}
	s.cur = f
	s.segs = append(s.segs, segment{path: path, first: seq, last: seq - 1})
	return syncDir(s.dir)
}

// enforceLimit drops the oldest segments while the spool is over its limit,
// and appends one loss event counting what was dropped, including what the
// dropped segments' own loss events counted.
func (s *Spool) enforceLimit() error {
	var dropped, carried uint64
	for s.size > s.limit && len(s.segs) > 1 {
		old := s.segs[0]
		if err := os.Remove(old.path); err != nil {
			return fmt.Errorf("drop spool segment: %w", err)
		}
		dropped += old.last - old.first + 1 - old.lossRecords
		carried += old.lost
		s.size -= old.size
		s.segs = s.segs[1:]
	}
	if dropped == 0 && carried == 0 {
		return nil
	}

	lost := dropped + carried
	s.dropped += dropped
	if err := s.saveState(); err != nil {
		return err
	}
	loss := &vigilpb.Event{
		Kind: vigilpb.EventKind_EVENT_KIND_LOSS, Lost: lost,
		Message: "spool full: oldest events dropped",
	}
	_, err := s.appendLocked(loss)
	return err
}

// dropAcked deletes the segments whose events are all acknowledged.
func (s *Spool) dropAcked() error {
	for len(s.segs) > 0 && s.segs[0].last <= s.acked && s.segs[0].last >= s.segs[0].first {
		if len(s.segs) == 1 && s.cur != nil {
			s.cur.Close()
			s.cur = nil
		}
		if err := os.Remove(s.segs[0].path); err != nil {
			return fmt.Errorf("delete acked segment: %w", err)
		}
		s.size -= s.segs[0].size
		s.segs = s.segs[1:]
	}
	return nil
}

// readSegment reads the records of seg above after, at most max of them.
func (s *Spool) readSegment(seg segment, after uint64, max int) ([]*vigilpb.Event, error) {
	f, err := os.Open(seg.path)
	if err != nil {
		return nil, fmt.Errorf("open spool segment: %w", err)
	}
	defer f.Close()

	var off int64
	if s.cursor.path == seg.path && s.cursor.seq == after {
		off = s.cursor.offset
	}
	if _, err := f.Seek(off, io.SeekStart); err != nil {
		return nil, fmt.Errorf("seek spool segment: %w", err)
	}

	var out []*vigilpb.Event
	for len(out) < max {
		seq, payload, n, err := readRecord(f)
		if err != nil || seq > s.durable {
			break
		}
		off += n
		if seq <= after {
			continue
		}
		ev := &vigilpb.Event{}
		if err := proto.Unmarshal(payload, ev); err != nil {
			ev = unreadable(seq)
		}
		out = append(out, ev)
		s.cursor = cursor{seq: seq, path: seg.path, offset: off}
	}
	return out, nil
}

// loadSegments scans every segment, cutting a torn tail, and reopens the
// newest for append.
func (s *Spool) loadSegments() error {
	names, err := filepath.Glob(filepath.Join(s.dir, segmentPrefix+"*"+segmentSuffix))
	if err != nil {
		return fmt.Errorf("list spool segments: %w", err)
	}
	sort.Strings(names)

	s.next = max(s.acked+1, s.base)
	for _, name := range names {
		seg, dmg, err := scanSegment(name)
		if err != nil {
			return err
		}
		s.repair.DamagedBytes += dmg.bytes
		s.repair.LostEvents += dmg.missing
		s.repair.tornTail = dmg.tail
		if seg.last < seg.first {
			os.Remove(name)
			continue
		}
		if n := len(s.segs); n > 0 && seg.first > s.segs[n-1].last+1 {
			s.repair.LostEvents += seg.first - s.segs[n-1].last - 1
		}
		s.segs = append(s.segs, seg)
		s.size += seg.size
		s.next = max(s.next, seg.last+1)
	}
	s.durable = s.next - 1
	return s.reopenNewest()
}

// reopenNewest opens the newest segment for append.
func (s *Spool) reopenNewest() error {
	if len(s.segs) == 0 {
		return nil
	}
	f, err := os.OpenFile(s.segs[len(s.segs)-1].path, os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("reopen spool segment: %w", err)
	}
	s.cur = f
	return nil
}

// unreadable stands in for a record whose checksum holds but whose payload
// does not decode: a loss event under the record's sequence number, so the
// loss is reported and the events after it are still sent.
func unreadable(seq uint64) *vigilpb.Event {
	return &vigilpb.Event{Seq: seq, Kind: vigilpb.EventKind_EVENT_KIND_LOSS, Lost: 1,
		TimeUnixNano: time.Now().UnixNano(), Message: "spool record unreadable"}
}

// errCorrupt marks a record that is torn or fails its checksum.
var errCorrupt = errors.New("corrupt spool record")

// encodeRecord frames payload: length, CRC-32C of seq and payload, seq.
func encodeRecord(seq uint64, payload []byte) []byte {
	rec := make([]byte, headerBytes+len(payload))
	binary.LittleEndian.PutUint32(rec[0:], uint32(len(payload)))
	binary.LittleEndian.PutUint64(rec[8:], seq)
	copy(rec[headerBytes:], payload)
	crc := crc32.Checksum(rec[8:], castagnoli)
	binary.LittleEndian.PutUint32(rec[4:], crc)
	return rec
}

// readRecord reads one record and returns its sequence, payload and size.
func readRecord(r io.Reader) (uint64, []byte, int64, error) {
	var hdr [headerBytes]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return 0, nil, 0, err
	}
	n := binary.LittleEndian.Uint32(hdr[0:])
	if n > maxRecordBytes {
		return 0, nil, 0, errCorrupt
	}
	body := make([]byte, 8+n)
	copy(body, hdr[8:])
	if _, err := io.ReadFull(r, body[8:]); err != nil {
		return 0, nil, 0, errCorrupt
	}
	if crc32.Checksum(body, castagnoli) != binary.LittleEndian.Uint32(hdr[4:]) {
		return 0, nil, 0, errCorrupt
	}
	return binary.LittleEndian.Uint64(hdr[8:]), body[8:], int64(headerBytes + n), nil
}

// loadState reads the acknowledged sequence, the sequence floor and the
// drop count. A state file that does not parse is returned as stateErr,
// for Open to rebuild; err is a file that cannot be read.
func (s *Spool) loadState() (stateErr, err error) {
	path := filepath.Join(s.dir, stateFile)
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read spool state: %w", err)
	}
	acked, dropped, base, err := parseState(string(b))
	if err != nil {
		return fmt.Errorf("parse spool state %s: %w", path, err), nil
	}
	s.acked, s.dropped, s.base = acked, dropped, base
	return nil, nil
}

// parseState parses "acked=N dropped=N base=N"; files written before the
// floor existed lack base.
func parseState(text string) (acked, dropped, base uint64, err error) {
	fields := strings.Fields(text)
	keys := []string{"acked", "dropped", "base"}
	vals := []*uint64{&acked, &dropped, &base}
	if len(fields) < 2 || len(fields) > len(keys) {
		return 0, 0, 0, fmt.Errorf("%d fields, want 2 or 3", len(fields))
	}
	for i, f := range fields {
		k, v, _ := strings.Cut(f, "=")
		n, perr := strconv.ParseUint(v, 10, 64)
		if k != keys[i] || perr != nil {
			return 0, 0, 0, fmt.Errorf("field %d %.32q: want %s=N", i+1, f, keys[i])
		}
		*vals[i] = n
	}
	return acked, dropped, base, nil
}

// saveState writes the state file atomically (temp file, fsync, rename).
func (s *Spool) saveState() error {
	text := fmt.Sprintf("acked=%d dropped=%d base=%d\n", s.acked, s.dropped, s.base)
	return WriteFileAtomic(filepath.Join(s.dir, stateFile), []byte(text), 0o600)
}

// WriteFileAtomic replaces path with data so that a crash leaves either the
// old or the new content: it writes a temporary file, fsyncs it, renames it
// over path and fsyncs the directory.
func WriteFileAtomic(path string, data []byte, perm os.FileMode) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, perm)
	if err != nil {
		return fmt.Errorf("create %s: %w", tmp, err)
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("write %s: %w", tmp, err)
	}

	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("rename %s: %w", path, err)
	}
	return syncDir(filepath.Dir(path))
}

// syncDir fsyncs a directory so a created or renamed entry survives a crash.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("open dir %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync dir %s: %w", dir, err)
	}
	return nil
}
