package store

import (
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	badger "github.com/dgraph-io/badger/v4"
)

// Token errors, returned by ConsumeToken.
var (
	// ErrTokenUnknown means no token has this id, or its secret is wrong.
	ErrTokenUnknown = errors.New("token unknown")
	// ErrTokenUsed means the token was already consumed.
	ErrTokenUsed = errors.New("token already used")
	// ErrTokenExpired means the token's lifetime is over.
	ErrTokenExpired = errors.New("token expired")
)

// TokenRecord is a stored enrollment token. Only a hash of its secret is kept.
type TokenRecord struct {
	// SecretHash is the SHA-256 of the token's secret part.
	SecretHash []byte `json:"secret_hash"`
	// Created is when the token was made.
	Created time.Time `json:"created"`
	// Expires is when it stops being accepted.
	Expires time.Time `json:"expires"`
	// CreatedBy is the admin identity that made it.
	CreatedBy string `json:"created_by"`
	// UsedAt is when it was consumed; zero while unused.
	UsedAt time.Time `json:"used_at,omitzero"`
	// UsedBy is the agent name it was consumed for.
	UsedBy string `json:"used_by,omitempty"`
}

// PutToken stores a new token durably.
func (s *Store) PutToken(id string, rec TokenRecord) error {
	val, err := json.Marshal(rec)
	if err != nil {
		return fmt.Errorf("marshal token: %w", err)
	}
	if err := s.db.Update(func(txn *badger.Txn) error { return txn.Set([]byte(pfxToken+id), val) }); err != nil {
		return fmt.Errorf("put token: %w", err)
	}
	return nil
}

// ConsumeToken checks a token's secret hash and lifetime and marks it used by
// agent, atomically: of two concurrent calls with one token, one wins.
func (s *Store) ConsumeToken(id string, secretHash []byte, agent string, now time.Time) error {
	s.tokMu.Lock()
	defer s.tokMu.Unlock()
	var rec TokenRecord
	if err := s.getJSON(pfxToken+id, &rec); errors.Is(err, ErrNotFound) {
		return ErrTokenUnknown
	} else if err != nil {
		return err
	}

	switch {
	case subtle.ConstantTimeCompare(rec.SecretHash, secretHash) != 1:
		return ErrTokenUnknown
	case !rec.UsedAt.IsZero():
		return ErrTokenUsed
	case now.After(rec.Expires):
		return ErrTokenExpired
	}
	rec.UsedAt, rec.UsedBy = now, agent
	return s.PutToken(id, rec)
}
