package store

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"

	badger "github.com/dgraph-io/badger/v4"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	vigilpb "github.com/vigilsec/vigil/gen/vigil/v1"
)

// Retention bounds the stored events. The oldest events go first.
type Retention struct {
	// MaxAge drops events older than this (by event time); 0 keeps them.
	MaxAge time.Duration
	// MaxBytes drops the oldest events while the log is larger; 0: no bound.
	MaxBytes int64
}

// ErrZeroSeq is returned for an agent event without a sequence number.
var ErrZeroSeq = errors.New("agent event has sequence 0")

// AppendEvents stores an agent's batch. Events whose (agent, seq) is already
// stored are skipped, so a replayed batch never counts twice. It returns the
// events stored now (with server ids set, in batch order) and the highest
// sequence number up to which every event of the agent is stored, the value
// to acknowledge. The write is durable when it returns.
//
// Sequences start at 1; a gap holds the acknowledgement at the last
// contiguous sequence until the missing events arrive.
func (s *Store) AppendEvents(agent string, events []*vigilpb.Event) ([]*vigilpb.Event, uint64, error) {
	return s.AppendBatch(agent, Batch{Events: events})
}

// Batch is one agent batch as AppendBatch takes it.
type Batch struct {
	// Events are stored unless already stored.
	Events []*vigilpb.Event
	// Refused are sequence numbers of events the caller would not store:
	// they count as received, so the acknowledgement passes them, but
	// nothing is stored under them.
	Refused []uint64
	// DroppedThrough says the agent dropped every event up to and
	// including it before sending it; zero means nothing was dropped.
	DroppedThrough uint64
}

// AppendBatch is AppendEvents for a batch with refused or dropped events:
// the contiguous mark is raised past them, durably, so the acknowledgement
// no longer waits for events that will never be stored.
func (s *Store) AppendBatch(agent string, b Batch) ([]*vigilpb.Event, uint64, error) {
	s.evMu.Lock()
	defer s.evMu.Unlock()
	var stored []*vigilpb.Event
	var mark uint64
	var added int64

	err := s.db.Update(func(txn *badger.Txn) error {
		var err error
		stored, added, err = s.putNew(txn, agent, b.Events)
		if err != nil {
			return err
		}
		if err := markRefused(txn, agent, b.Refused); err != nil {
			return err
		}
		if err := skipDropped(txn, agent, b.DroppedThrough); err != nil {
			return err
		}
		mark, err = advanceMark(txn, agent)
		return err
	})
	if err != nil {
		return nil, 0, fmt.Errorf("append events of %s: %w", agent, err)
	}

	s.evBytes += added
	return stored, mark, s.pruneBySizeLocked()
}

func (s *Store) putNew(txn *badger.Txn, agent string, events []*vigilpb.Event) ([]*vigilpb.Event, int64, error) {
	mark, err := getUint(txn, markKey(agent))
	if err != nil {
		return nil, 0, err
	}
	var stored []*vigilpb.Event
	var added int64
	for _, ev := range events {
		if ev.GetSeq() == 0 {
			return nil, 0, ErrZeroSeq
		}
		dk := agentKey(pfxDedupe, agent, ev.GetSeq())
		if ev.GetSeq() <= mark || exists(txn, dk) {
			continue
		}

		ev = proto.CloneOf(ev)
		ev.Agent = agent
		n, err := s.putEvent(txn, ev)
		if err != nil {
			return nil, 0, err
		}
		if err := txn.Set(dk, nil); err != nil {
			return nil, 0, err
		}
		stored, added = append(stored, ev), added+n
	}
	return stored, added, nil
}

// advanceMark moves the agent's contiguous mark over the dedupe entries that
// follow it, deleting them: everything at or below the mark is a duplicate.
func advanceMark(txn *badger.Txn, agent string) (uint64, error) {
	mark, err := getUint(txn, markKey(agent))
	if err != nil {
		return 0, err
	}
	start := mark
	for exists(txn, agentKey(pfxDedupe, agent, mark+1)) {
		mark++
		if err := txn.Delete(agentKey(pfxDedupe, agent, mark)); err != nil {
			return 0, err
		}
	}
	if mark == start {
		return mark, nil
	}
	return mark, putUint(txn, markKey(agent), mark)
}

// markRefused records refused sequence numbers as received.
func markRefused(txn *badger.Txn, agent string, seqs []uint64) error {
	mark, err := getUint(txn, markKey(agent))
	if err != nil {
		return err
	}
	for _, seq := range seqs {
		if seq == 0 {
			return ErrZeroSeq
		}
		if seq > mark {
			if err := txn.Set(agentKey(pfxDedupe, agent, seq), nil); err != nil {
				return err
			}
		}
	}
	return nil
}

// skipDropped raises the agent's contiguous mark to through when it is
// below, deleting the dedupe entries it passes.
func skipDropped(txn *badger.Txn, agent string, through uint64) error {
	mark, err := getUint(txn, markKey(agent))
	if err != nil || through <= mark {
		return err
	}
	prefix := []byte(pfxDedupe + agent + "\x00")
	it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix, PrefetchValues: false})
	var passed [][]byte
	for it.Seek(agentKey(pfxDedupe, agent, mark+1)); it.Valid(); it.Next() {
		if bytes.Compare(it.Item().Key(), agentKey(pfxDedupe, agent, through)) > 0 {
			break
		}
		passed = append(passed, it.Item().KeyCopy(nil))
	}
	it.Close()
	for _, k := range passed {
		if err := txn.Delete(k); err != nil {
			return err
		}
	}
	return putUint(txn, markKey(agent), through)
}

func markKey(agent string) []byte { return []byte(pfxMark + agent) }

func exists(txn *badger.Txn, key []byte) bool {
	_, err := txn.Get(key)
	return err == nil
}

// putEvent assigns a server id and writes the event under its time key. It
// returns the bytes written.
func (s *Store) putEvent(txn *badger.Txn, ev *vigilpb.Event) (int64, error) {
	id := s.newID()
	ev.ServerId = strconv.FormatUint(id, 10)
	if ev.TimeUnixNano == 0 {
		ev.TimeUnixNano = time.Now().UnixNano()
	}
	val, err := proto.Marshal(ev)
	if err != nil {
		return 0, fmt.Errorf("marshal event: %w", err)
	}
	if err := txn.Set(timeKey(pfxEvent, ev.TimeUnixNano, id), val); err != nil {
		return 0, err
	}
	return int64(len(val)), putUint(txn, []byte(keyEventID), id)
}

// ResetSequences forgets an agent's event sequence marks, for a name that
// enrolls again with a fresh agent whose sequences restart at 1.
func (s *Store) ResetSequences(agent string) error {
	s.evMu.Lock()
	defer s.evMu.Unlock()
	return s.db.Update(func(txn *badger.Txn) error {
		if err := deletePrefix(txn, []byte(pfxDedupe+agent+"\x00")); err != nil {
			return err
		}
		return txn.Delete(markKey(agent))
	})
}

// RecordEvent stores a server-side event (seq 0) and sets its server id.
func (s *Store) RecordEvent(ev *vigilpb.Event) error {
	s.evMu.Lock()
	defer s.evMu.Unlock()
	var n int64
	err := s.db.Update(func(txn *badger.Txn) error {
		var err error
		n, err = s.putEvent(txn, ev)
		return err
	})
	if err != nil {
		return fmt.Errorf("record event: %w", err)
	}
	s.evBytes += n
	return s.pruneBySizeLocked()
}

// EventFilter selects stored events. Zero fields select everything.
type EventFilter struct {
	// Agent keeps only this agent's events.
	Agent string
	// Kinds keeps only these kinds.
	Kinds []vigilpb.EventKind
	// Since keeps events at or after this time (ns since the epoch).
	Since int64
	// Limit caps the result, keeping the newest.
	Limit int
}

// Match reports whether ev passes the filter's agent and kinds.
func (f EventFilter) Match(ev *vigilpb.Event) bool {
	if f.Agent != "" && ev.GetAgent() != f.Agent {
		return false
	}
	return len(f.Kinds) == 0 || slices.Contains(f.Kinds, ev.GetKind())
}

// QueryEvents returns matching events, oldest first.
func (s *Store) QueryEvents(f EventFilter) ([]*vigilpb.Event, error) {
	out, _, err := s.QueryEventsBounded(f, 0)
	return out, err
}

// QueryEventsBounded is QueryEvents keeping the newest matches whose
// encodings, with their framing in a repeated field, add up to at most
// maxBytes (0: no bound). truncated says an older match was left out for
// the bound.
func (s *Store) QueryEventsBounded(f EventFilter, maxBytes int) (out []*vigilpb.Event, truncated bool, err error) {
	err = s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte(pfxEvent), Reverse: true})
		defer it.Close()
		floor := timeKey(pfxEvent, f.Since, 0)
		size := 0
		for it.Seek(append([]byte(pfxEvent), 0xff)); it.Valid(); it.Next() {
			if bytes.Compare(it.Item().Key(), floor) < 0 || (f.Limit > 0 && len(out) >= f.Limit) {
				break
			}
			ev := &vigilpb.Event{}
			if err := it.Item().Value(func(b []byte) error { return proto.Unmarshal(b, ev) }); err != nil {
				return fmt.Errorf("decode event: %w", err)
			}
			if !f.Match(ev) {
				continue
			}
			if size += framedSize(ev); maxBytes > 0 && size > maxBytes {
				truncated = true
				break
			}
			out = append(out, ev)
		}
		return nil
	})
	slices.Reverse(out)
	return out, truncated, err
}

// framedSize is ev's size as an element of a repeated message field: the
// encoding, a one-byte tag and its length as a varint.
func framedSize(ev *vigilpb.Event) int {
	n := proto.Size(ev)
	return 1 + protowire.SizeVarint(uint64(n)) + n
}

// Prune applies the retention bounds now.
func (s *Store) Prune(now time.Time) error {
	s.evMu.Lock()
	defer s.evMu.Unlock()
	if s.ret.MaxAge > 0 {
		cutoff := timeKey(pfxEvent, now.Add(-s.ret.MaxAge).UnixNano(), 0)
		stop := func(key []byte, _ int64) bool { return bytes.Compare(key, cutoff) >= 0 }
		if err := s.dropOldest(stop); err != nil {
			return err
		}
	}
	return s.pruneBySizeLocked()
}

func (s *Store) pruneBySizeLocked() error {
	if s.ret.MaxBytes <= 0 || s.evBytes <= s.ret.MaxBytes {
		return nil
	}
	// Drop down to 90% so pruning does not run on every write.
	target := s.ret.MaxBytes * 9 / 10
	return s.dropOldest(func(_ []byte, freed int64) bool { return s.evBytes-freed <= target })
}

// dropOldest deletes events from the oldest on until stop says to, in
// transactions of bounded size. stop sees each key and the bytes freed so far
// in the current transaction. The caller holds evMu.
func (s *Store) dropOldest(stop func(key []byte, freed int64) bool) error {
	for {
		freed, more, err := s.dropChunk(stop, 1000)
		if err != nil {
			return fmt.Errorf("prune events: %w", err)
		}
		s.evBytes -= freed
		if !more {
			return nil
		}
	}
}

func (s *Store) dropChunk(stop func([]byte, int64) bool, max int) (freed int64, more bool, err error) {
	err = s.db.Update(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte(pfxEvent)})
		defer it.Close()
		count := 0
		for it.Rewind(); it.Valid(); it.Next() {
			if count == max {
				more = true
				return nil
			}
			if stop(it.Item().Key(), freed) {
				return nil
			}
			if err := txn.Delete(it.Item().KeyCopy(nil)); err != nil {
				return err
			}
			freed += it.Item().ValueSize()
			count++
		}
		return nil
	})
	if err != nil {
		return 0, false, err
	}
	return freed, more, nil
}

func deletePrefix(txn *badger.Txn, prefix []byte) error {
	it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix, PrefetchValues: false})
	defer it.Close()
	var keys [][]byte
	for it.Rewind(); it.Valid(); it.Next() {
		keys = append(keys, it.Item().KeyCopy(nil))
	}
	for _, k := range keys {
		if err := txn.Delete(k); err != nil {
			return err
		}
	}
	return nil
}
