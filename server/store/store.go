// Package store is the server's durable state in badger: agent events
// (deduplicated by agent and sequence, retained by age and size), protection
// instructions with their acknowledgements, the audit log of admin actions,
// enrolled agents, enrollment tokens, and a namespaced key-value space the
// decision engine keeps its own state in. The server's api and registry call
// it; it owns the badger directory, and Close releases it.
//
// Every write is synced before it returns (badger SyncWrites), so whatever a
// caller acknowledged survives a crash of the process.
package store

import (
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"

	badger "github.com/dgraph-io/badger/v4"
)

// Key prefixes of the record families. Every family lives under its own
// prefix so a scan of one never sees another.
const (
	pfxEvent       = "e/"  // e/<time ns><id> -> Event
	pfxDedupe      = "d/"  // d/<agent>\x00<seq> -> empty, out-of-order seqs above the mark
	pfxMark        = "m/"  // m/<agent> -> highest contiguous stored seq
	pfxInstruction = "i/"  // i/<agent>\x00<seq> -> instruction record
	pfxInsSeq      = "is/" // is/<agent> -> last instruction seq assigned
	pfxAudit       = "a/"  // a/<time ns><id> -> audit record
	pfxAgent       = "ag/" // ag/<name> -> agent record
	pfxToken       = "t/"  // t/<id> -> token record
	pfxKV          = "kv/" // kv/<namespace><key> -> caller's value
	keyEventID     = "meta/event-id"
)

// ErrNotFound is returned when a requested record does not exist.
var ErrNotFound = errors.New("not found")

// Options configure a Store.
type Options struct {
	// Dir is the badger directory; it is created 0700 when absent.
	Dir string
	// Logger receives badger's own warnings and errors.
	Logger *slog.Logger
	// Retention bounds the event log; zero values keep everything.
	Retention Retention
}

// Store is the server's database. Its methods are safe for concurrent use;
// Close must be called once, after every other call has returned.
type Store struct {
	db  *badger.DB
	ret Retention

	// idMu guards nextID, the counter that makes event and audit keys unique.
	idMu   sync.Mutex
	nextID uint64

	// insMu serializes instruction sequence assignment and acknowledgement.
	insMu sync.Mutex

	// tokMu serializes token consumption so a token is used once.
	tokMu sync.Mutex

	// evMu guards evBytes, the running size of the stored events, and
	// serializes event writes so the dedupe marks stay consistent.
	evMu    sync.Mutex
	evBytes int64
}

// Open opens (or creates) the store in opts.Dir.
func Open(opts Options) (*Store, error) {
	bopts := badger.DefaultOptions(opts.Dir).
		WithSyncWrites(true).
		WithLogger(badgerLogger{opts.Logger}).
		WithNumVersionsToKeep(1).
		WithDetectConflicts(false)
	db, err := badger.Open(bopts)
	if err != nil {
		return nil, fmt.Errorf("open badger %s: %w", opts.Dir, err)
	}
	s := &Store{db: db, ret: opts.Retention}

	if err := s.loadCounters(); err != nil {
		db.Close()
		return nil, err
	}
	return s, nil
}

// Close flushes and closes the database.
func (s *Store) Close() error {
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("close badger: %w", err)
	}
	return nil
}

func (s *Store) loadCounters() error {
	return s.db.View(func(txn *badger.Txn) error {
		v, err := getUint(txn, []byte(keyEventID))
		if err != nil {
			return err
		}
		s.nextID = v + 1

		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte(pfxEvent)})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			s.evBytes += it.Item().ValueSize()
		}
		return nil
	})
}

// newID returns a process-wide unique, increasing id; ids survive restarts
// because every event write persists the highest one used.
func (s *Store) newID() uint64 {
	s.idMu.Lock()
	defer s.idMu.Unlock()
	id := s.nextID
	s.nextID++
	return id
}

func getUint(txn *badger.Txn, key []byte) (uint64, error) {
	item, err := txn.Get(key)
	if errors.Is(err, badger.ErrKeyNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("get %q: %w", key, err)
	}
	var v uint64
	err = item.Value(func(b []byte) error {
		if len(b) != 8 {
			return fmt.Errorf("value of %q: %d bytes, want 8", key, len(b))
		}
		v = binary.BigEndian.Uint64(b)
		return nil
	})
	return v, err
}

func putUint(txn *badger.Txn, key []byte, v uint64) error {
	return txn.Set(key, binary.BigEndian.AppendUint64(nil, v))
}

// agentKey returns prefix + agent + 0 + seq (big endian), so one agent's
// records sort by sequence.
func agentKey(prefix, agent string, seq uint64) []byte {
	k := make([]byte, 0, len(prefix)+len(agent)+9)
	k = append(k, prefix...)
	k = append(k, agent...)
	k = append(k, 0)
	return binary.BigEndian.AppendUint64(k, seq)
}

func timeKey(prefix string, t int64, id uint64) []byte {
	k := append([]byte(prefix), make([]byte, 0, 16)...)
	k = binary.BigEndian.AppendUint64(k, uint64(t))
	return binary.BigEndian.AppendUint64(k, id)
}

type badgerLogger struct{ l *slog.Logger }

func (b badgerLogger) Errorf(f string, a ...any) {
	if b.l != nil {
		b.l.Error("badger", "detail", strings.TrimSpace(fmt.Sprintf(f, a...)))
	}
}

func (b badgerLogger) Warningf(f string, a ...any) {
	if b.l != nil {
		b.l.Warn("badger", "detail", strings.TrimSpace(fmt.Sprintf(f, a...)))
	}
}

func (b badgerLogger) Infof(string, ...any)  {}
func (b badgerLogger) Debugf(string, ...any) {}
