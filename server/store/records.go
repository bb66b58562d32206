package store

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"

	badger "github.com/dgraph-io/badger/v4"
)

// AuditRecord is one admin action.
type AuditRecord struct {
	// Time is when the action was taken.
	Time time.Time `json:"time"`
	// Actor is the admin identity, e.g. "admin/alice(operator)".
	Actor string `json:"actor"`
	// Action is the RPC, e.g. "Kill".
	Action string `json:"action"`
	// Target names what was acted on (agent, entity, policy).
	Target string `json:"target,omitempty"`
	// Detail holds the request's parameters in a short form.
	Detail string `json:"detail,omitempty"`
	// Result is "ok" or the status code the call ended with.
	Result string `json:"result"`
}

// AppendAudit stores an audit record durably.
func (s *Store) AppendAudit(rec AuditRecord) error {
	val, err := json.Marshal(rec)
	if err != nil {
		return fmt.Errorf("marshal audit record: %w", err)
	}
	key := timeKey(pfxAudit, rec.Time.UnixNano(), s.newID())
	if err := s.db.Update(func(txn *badger.Txn) error { return txn.Set(key, val) }); err != nil {
		return fmt.Errorf("append audit record: %w", err)
	}
	return nil
}

// Audit returns the audit log, oldest first.
//
// The audit log is kept without a retention bound and protocol v1 has no
// call to read it, so it is read only from the store.
func (s *Store) Audit() ([]AuditRecord, error) {
	var out []AuditRecord
	err := s.scanJSON(pfxAudit, func() any { out = append(out, AuditRecord{}); return &out[len(out)-1] })
	return out, err
}

// AgentRecord is an enrolled agent as the server remembers it.
type AgentRecord struct {
	// Name is the agent's name (its certificate's common name).
	Name string `json:"name"`
	// Serial is the serial number of the agent's current certificate; a
	// certificate with another serial is refused.
	Serial string `json:"serial"`
	// TokenID is the enrollment token that enrolled it.
	TokenID string `json:"token_id"`
	// Enrolled is when it enrolled.
	Enrolled time.Time `json:"enrolled"`
	// Revoked is set by RevokeAgent; a revoked agent is refused.
	Revoked bool `json:"revoked,omitempty"`
	// RevokedAt is when it was revoked.
	RevokedAt time.Time `json:"revoked_at,omitzero"`
	// Info is the last state the agent reported, as a marshaled vigilpb.Agent.
	Info []byte `json:"info,omitempty"`
}

// PutAgent stores an agent record durably, replacing any previous one.
func (s *Store) PutAgent(rec AgentRecord) error {
	val, err := json.Marshal(rec)
	if err != nil {
		return fmt.Errorf("marshal agent %s: %w", rec.Name, err)
	}
	err = s.db.Update(func(txn *badger.Txn) error { return txn.Set([]byte(pfxAgent+rec.Name), val) })
	if err != nil {
		return fmt.Errorf("put agent %s: %w", rec.Name, err)
	}
	return nil
}

// Agent returns an agent's record, or ErrNotFound.
func (s *Store) Agent(name string) (AgentRecord, error) {
	var rec AgentRecord
	err := s.getJSON(pfxAgent+name, &rec)
	return rec, err
}

// Agents returns every agent record, sorted by name.
func (s *Store) Agents() ([]AgentRecord, error) {
	var out []AgentRecord
	err := s.scanJSON(pfxAgent, func() any { out = append(out, AgentRecord{}); return &out[len(out)-1] })
	return out, err
}

func (s *Store) getJSON(key string, v any) error {
	return s.db.View(func(txn *badger.Txn) error {
		item, err := txn.Get([]byte(key))
		if errors.Is(err, badger.ErrKeyNotFound) {
			return ErrNotFound
		}
		if err != nil {
			return fmt.Errorf("get %s: %w", key, err)
		}
		return item.Value(func(b []byte) error { return json.Unmarshal(b, v) })
	})
}

// scanJSON decodes every value under prefix, in key order, into the values
// next returns.
func (s *Store) scanJSON(prefix string, next func() any) error {
	return s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte(prefix), PrefetchValues: true})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			err := it.Item().Value(func(b []byte) error { return json.Unmarshal(b, next()) })
			if err != nil {
				return fmt.Errorf("decode %s: %w", it.Item().Key(), err)
			}
		}
		return nil
	})
}
