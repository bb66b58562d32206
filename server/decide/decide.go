// Package decide is the server's decision engine: it holds the running
// policy, feeds agent events, postures and counters to the detectors, keeps
// every entity's level through the evaluator, runs the policy's protection
// rules, and compiles, versions and pushes each agent's verdict table.
//
// The transport (server/api) calls an Engine for everything the Engine
// interface lists, plus Cut, Restore and SetIndicators; the server's main
// runs Engine.Run so that time-bound findings expire and time windows open
// and close. The Engine reaches agents and the event record only through the
// api.Sink it is given, and persists its whole state (policy versions,
// entities, level history, agents' tables, cuts, feeds) through the KV it is
// given; New restores that state. It owns no other resource.
package decide

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	vigilpb "github.com/vigilsec/vigil/gen/vigil/v1"
	"github.com/vigilsec/vigil/policy"
	"github.com/vigilsec/vigil/server/api"
	"github.com/vigilsec/vigil/server/detect"
	"github.com/vigilsec/vigil/server/evaluate"
)

// KV is the key-value store the engine persists to. Implementations are
// safe for concurrent use and durable when a write returns.
type KV interface {
	Get(key []byte) (value []byte, ok bool, err error)
	Set(key, value []byte) error
	Delete(key []byte) error
	Scan(prefix []byte, fn func(key, value []byte) error) error
}

// Config configures New.
type Config struct {
	KV KV
	// Sink receives diffs, instructions and records in decision order, from
	// whichever goroutine made the decision. Its methods must not wait for
	// an Engine call to return: the next decision's Sink calls wait for
	// them.
	Sink   api.Sink
	Logger *slog.Logger
	// Now returns the current time; nil means time.Now.
	Now func() time.Time
}

// builtinPolicy is in force until the first policy is applied: it admits
// everything and decides nothing.
const builtinPolicy = `
version: 1
levels: [untrusted, low, medium, high]
defaults: {level: medium, traffic: allow, unknown_peers: allow, fail_mode: last-known}
`

// Engine implements api.Engine. It is safe for concurrent use: one mutex
// serializes every decision, and a second one keeps the Sink calls of
// successive decisions in order without holding the first.
type Engine struct {
	kv   KV
	sink api.Sink
	log  *slog.Logger
	now  func() time.Time

	emitMu sync.Mutex // held while an outbox is emitted, taken before mu is released

	mu            sync.Mutex
	policy        *policy.Policy            // guarded by mu
	policyVersion uint64                    // guarded by mu
	book          *evaluate.Book            // guarded by mu
	detect        *detect.State             // guarded by mu
	agents        map[string]*agentRecord   // guarded by mu
	cuts          map[string]map[string]cut // agent → peer → cause; guarded by mu
	killOnExec    map[string]string         // sha256 → reason, added at run time; guarded by mu
	windows       string                    // rules in force at the last compile; guarded by mu
	seq           uint64                    // finding ids and history key order; guarded by mu
	hosts         map[string]bool           // agents that run a service; guarded by mu
	worldAgents   map[string]*policy.Agent  // compile view of agents; guarded by mu
	conflicts     map[string]string         // agent → its contested addresses; guarded by mu
}

var _ api.Engine = (*Engine)(nil)

// agentRecord is what the engine keeps per agent; Engine.mu guards it.
type agentRecord struct {
	Name      string                `json:"name"`
	Addresses []string              `json:"addresses"`
	Scope     string                `json:"scope"`
	Online    bool                  `json:"-"`
	Acked     uint64                `json:"acked"`
	Posture   *vigilpb.Posture      `json:"-"`
	TableRaw  []byte                `json:"table"` // proto encoding of Table
	Table     *vigilpb.VerdictTable `json:"-"`
}

// cut is why a peer is cut on an agent.
type cut struct {
	Origin  string `json:"origin"`            // "admin" or "response"
	Device  string `json:"device,omitempty"`  // response: the device whose level fell
	Service string `json:"service,omitempty"` // response: the service it lost
}

const (
	originAdmin    = "admin"
	originResponse = "response"
)

// New returns an engine with the state persisted in cfg.KV.
func New(cfg Config) (*Engine, error) {
	if cfg.KV == nil || cfg.Sink == nil {
		return nil, errors.New("new engine: KV and Sink are required")
	}
	e := &Engine{kv: cfg.KV, sink: cfg.Sink, log: cfg.Logger, now: cfg.Now,
		detect: detect.NewState(), agents: map[string]*agentRecord{},
		cuts: map[string]map[string]cut{}, killOnExec: map[string]string{}}
	if e.log == nil {
		e.log = slog.New(slog.DiscardHandler)
	}
	if e.now == nil {
		e.now = time.Now
	}
	if err := e.restore(); err != nil {
		return nil, err
	}
	return e, nil
}

// Run expires time-bound findings and follows rule time windows once a
// second until ctx ends. Errors are logged and the loop goes on.
func (e *Engine) Run(ctx context.Context) error {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			if err := e.Tick(); err != nil {
				e.log.Error("engine tick", "err", err)
			}
		}
	}
}

// Tick expires findings and re-applies time windows now.
func (e *Engine) Tick() error {
	return e.unlock(e.lock())
}

// settle expires findings that lapsed and recompiles what that, or a time
// window opening or closing, changed. Called with mu held.
func (e *Engine) settle(o *outbox) error {
	now := e.now()
	changes, released := e.book.Expire(now)
	dirty, err := e.recordChanges(o, changes)
	if err != nil {
		return err
	}
	for _, ent := range released {
		dirty[ent] = true
		if err := e.storeEntity(ent); err != nil {
			return err
		}
	}
	if w := e.windowKey(now); w != e.windows {
		e.windows = w
		return e.recompute(o, e.allAgents())
	}
	if len(dirty) == 0 {
		return nil
	}
	return e.recompute(o, e.affected(dirty))
}
