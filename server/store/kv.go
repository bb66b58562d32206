package store

import (
	"bytes"
	"errors"
	"fmt"

	badger "github.com/dgraph-io/badger/v4"
)

// Namespace is a key-value space inside the store whose keys all carry one
// prefix, for callers (the decision engine) that keep their own records.
// Its methods are safe for concurrent use; every write is durable when it
// returns. Values passed in or returned are not retained or shared.
type Namespace struct {
	db     *badger.DB
	prefix []byte
}

// Namespace returns the key space named prefix (e.g. "decide/"). Two
// namespaces must not have one prefix be a prefix of the other.
func (s *Store) Namespace(prefix string) *Namespace {
	return &Namespace{db: s.db, prefix: []byte(pfxKV + prefix)}
}

func (n *Namespace) key(k []byte) []byte {
	return append(bytes.Clone(n.prefix), k...)
}

// Get returns the value of key; ok is false when it is absent.
func (n *Namespace) Get(key []byte) (value []byte, ok bool, err error) {
	err = n.db.View(func(txn *badger.Txn) error {
		item, err := txn.Get(n.key(key))
		if errors.Is(err, badger.ErrKeyNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		ok = true
		value, err = item.ValueCopy(nil)
		return err
	})
	if err != nil {
		return nil, false, fmt.Errorf("get %q: %w", key, err)
	}
	return value, ok, nil
}

// Set stores value under key.
func (n *Namespace) Set(key, value []byte) error {
	err := n.db.Update(func(txn *badger.Txn) error { return txn.Set(n.key(key), bytes.Clone(value)) })
	if err != nil {
		return fmt.Errorf("set %q: %w", key, err)
	}
	return nil
}

// SetMany stores values[i] under keys[i], committing as few transactions
// (and disk syncs) as badger's batch size allows. Every write is durable
// when it returns nil; a crash during the call may keep only some of them.
func (n *Namespace) SetMany(keys, values [][]byte) error {
	if len(keys) != len(values) {
		return fmt.Errorf("set many: %d keys but %d values", len(keys), len(values))
	}
	wb := n.db.NewWriteBatch()
	defer wb.Cancel()
	for i := range keys {
		if err := wb.Set(n.key(keys[i]), bytes.Clone(values[i])); err != nil {
			return fmt.Errorf("set %q: %w", keys[i], err)
		}
	}
	if err := wb.Flush(); err != nil {
		return fmt.Errorf("flush batch: %w", err)
	}
	return nil
}

// Delete removes key; deleting an absent key is not an error.
func (n *Namespace) Delete(key []byte) error {
	if err := n.db.Update(func(txn *badger.Txn) error { return txn.Delete(n.key(key)) }); err != nil {
		return fmt.Errorf("delete %q: %w", key, err)
	}
	return nil
}

// Scan calls fn for every key starting with prefix, in key order, with the
// key stripped of the namespace. fn must not retain key or value, nor call
// the namespace's write methods; an error from fn stops the scan and is
// returned.
func (n *Namespace) Scan(prefix []byte, fn func(key, value []byte) error) error {
	return n.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: n.key(prefix), PrefetchValues: true})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			val, err := it.Item().ValueCopy(nil)
			if err != nil {
				return fmt.Errorf("scan %q: %w", prefix, err)
			}
			if err := fn(it.Item().Key()[len(n.prefix):], val); err != nil {
				return err
			}
		}
		return nil
	})
}
