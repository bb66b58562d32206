// Package registry tracks enrolled agents: which are online (and the stream
// each is on), when each was last seen, and what each last reported
// (capabilities, posture, addresses, scope, acknowledged table version,
// events lost). It persists agents through server/store so enrollment,
// revocation and the last report survive restarts. server/api is its caller.
package registry

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"

	vigilpb "github.com/vigilsec/vigil/gen/vigil/v1"
	"github.com/vigilsec/vigil/server/store"
)

// Errors returned when an agent may not enroll or connect.
var (
	// ErrNameTaken means another, unrevoked agent already enrolled the name.
	ErrNameTaken = errors.New("agent name already enrolled")
	// ErrUnknown means no agent enrolled under the name.
	ErrUnknown = errors.New("agent not enrolled")
	// ErrRevoked means the agent was revoked.
	ErrRevoked = errors.New("agent revoked")
	// ErrStaleCert means the certificate is not the agent's current one
	// (the name was revoked and enrolled again since it was issued).
	ErrStaleCert = errors.New("certificate superseded")
	// ErrReplaced ends a stream when the same agent opened a newer one.
	ErrReplaced = errors.New("replaced by a newer stream")
)

// Conn is an agent's open stream, as the registry sees it.
type Conn interface {
	// Close ends the stream with err as the reason; it must not block.
	Close(err error)
}

// Registry is the set of enrolled agents. It is safe for concurrent use.
type Registry struct {
	st  *store.Store
	now func() time.Time

	mu sync.Mutex
	// agents maps a name to its state; guarded by mu, as are the entries.
	agents map[string]*entry
}

type entry struct {
	rec  store.AgentRecord
	info *vigilpb.Agent // Online and Revoked are derived, not stored here
	conn Conn
}

// New loads the enrolled agents from st.
func New(st *store.Store) (*Registry, error) {
	recs, err := st.Agents()
	if err != nil {
		return nil, fmt.Errorf("load agents: %w", err)
	}
	r := &Registry{st: st, now: time.Now, agents: make(map[string]*entry)}
	for _, rec := range recs {
		info := &vigilpb.Agent{}
		if err := proto.Unmarshal(rec.Info, info); err != nil {
			return nil, fmt.Errorf("decode agent %s: %w", rec.Name, err)
		}
		info.Name = rec.Name
		r.agents[rec.Name] = &entry{rec: rec, info: info}
	}
	return r, nil
}

// Enroll records a new agent with its certificate serial. A name that an
// unrevoked agent holds is refused with ErrNameTaken; a revoked name may
// enroll again, which supersedes every earlier certificate of that name,
// restarts its event sequence numbers and cancels the instructions still
// pending for the revoked agent.
func (r *Registry) Enroll(name, serial, tokenID string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if e, ok := r.agents[name]; ok && !e.rec.Revoked {
		return ErrNameTaken
	}
	if err := r.st.ResetSequences(name); err != nil {
		return err
	}
	if _, err := r.st.CancelPending(name, "agent enrolled again"); err != nil {
		return err
	}

	e := &entry{
		rec:  store.AgentRecord{Name: name, Serial: serial, TokenID: tokenID, Enrolled: r.now()},
		info: &vigilpb.Agent{Name: name},
	}
	if err := r.persist(e); err != nil {
		return err
	}
	r.agents[name] = e
	return nil
}

// Check reports whether a certificate (name, serial) may connect now.
func (r *Registry) Check(name, serial string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.checkLocked(name, serial)
}

func (r *Registry) checkLocked(name, serial string) error {
	e, ok := r.agents[name]
	switch {
	case !ok:
		return ErrUnknown
	case e.rec.Serial != serial:
		return ErrStaleCert
	case e.rec.Revoked:
		return ErrRevoked
	}
	return nil
}

// Online marks an agent online on conn with what its hello reported, after
// checking its certificate again. A previous stream of the agent is closed
// with ErrReplaced.
func (r *Registry) Online(name, serial string, hello *vigilpb.Hello, conn Conn) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := r.checkLocked(name, serial); err != nil {
		return err
	}
	e := r.agents[name]
	if e.conn != nil {
		e.conn.Close(ErrReplaced)
	}

	e.conn = conn
	e.info.Capabilities = hello.GetCapabilities()
	e.info.Posture = hello.GetPosture()
	e.info.Addresses = hello.GetAddresses()
	e.info.Scope = hello.GetScope()
	e.info.LastSeenUnix = r.now().Unix()
	return r.persist(e)
}

// Offline marks an agent offline if conn is still its current stream.
func (r *Registry) Offline(name string, conn Conn) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	e, ok := r.agents[name]
	if !ok || e.conn != conn {
		return nil
	}
	e.conn = nil
	e.info.LastSeenUnix = r.now().Unix()
	return r.persist(e)
}

// Conn returns the agent's open stream, or nil when it is offline.
func (r *Registry) Conn(name string) Conn {
	r.mu.Lock()
	defer r.mu.Unlock()
	if e, ok := r.agents[name]; ok {
		return e.conn
	}
	return nil
}

// Known reports whether the agent enrolled (revoked agents included).
func (r *Registry) Known(name string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	_, ok := r.agents[name]
	return ok
}

// Seen records that the agent sent a message now. An unknown name is
// ignored.
//
// The time is kept in memory and persisted only with the next report or when
// the agent goes offline, so after a crash last_seen can be older than the
// agent's last message.
func (r *Registry) Seen(name string) {
	_ = r.update(name, false, func(*vigilpb.Agent) {})
}

// TableAcked records the table version the agent enforces. The version is
// live state, kept in memory only: a synced write per acknowledgement would
// queue every agent's acknowledgement of a policy change behind one disk
// sync each.
func (r *Registry) TableAcked(name string, version uint64) error {
	return r.update(name, false, func(a *vigilpb.Agent) { a.TableVersion = version })
}

// Posture records the agent's new posture.
func (r *Registry) Posture(name string, p *vigilpb.Posture) error {
	return r.update(name, true, func(a *vigilpb.Agent) { a.Posture = p })
}

// Counters records the agent's kernel loss counter.
func (r *Registry) Counters(name string, c *vigilpb.Counters) error {
	return r.update(name, true, func(a *vigilpb.Agent) { a.EventsLost = c.GetEventsLost() })
}

func (r *Registry) update(name string, persist bool, fn func(*vigilpb.Agent)) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	e, ok := r.agents[name]
	if !ok {
		return ErrUnknown
	}
	fn(e.info)
	e.info.LastSeenUnix = r.now().Unix()
	if !persist {
		return nil
	}
	return r.persist(e)
}

// Revoke marks the agent revoked (persisted) and closes its stream with
// ErrRevoked; it is refused from then on.
func (r *Registry) Revoke(name string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	e, ok := r.agents[name]
	if !ok {
		return ErrUnknown
	}
	e.rec.Revoked, e.rec.RevokedAt = true, r.now()
	if err := r.persist(e); err != nil {
		return err
	}
	if e.conn != nil {
		e.conn.Close(ErrRevoked)
		e.conn = nil
	}
	return nil
}

// List returns every agent sorted by name, as copies the caller may change.
func (r *Registry) List() []*vigilpb.Agent {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]*vigilpb.Agent, 0, len(r.agents))
	for _, e := range r.agents {
		a := proto.CloneOf(e.info)
		a.Online, a.Revoked = e.conn != nil, e.rec.Revoked
		out = append(out, a)
	}
	slices.SortFunc(out, func(a, b *vigilpb.Agent) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// persist writes the entry; the caller holds mu.
func (r *Registry) persist(e *entry) error {
	info, err := proto.Marshal(e.info)
	if err != nil {
		return fmt.Errorf("marshal agent %s: %w", e.rec.Name, err)
	}
	e.rec.Info = info
	return r.st.PutAgent(e.rec)
}
