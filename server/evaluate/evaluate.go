// Package evaluate keeps the security level of every user, device, service
// and process, with the findings that set it. The decision engine
// (server/decide) owns one Book, feeds it findings and the passing of time,
// and persists the entities and level changes it reports. The package holds
// no resources and does no I/O.
package evaluate

import (
	"sort"
	"time"

	"github.com/vigilsec/vigil/policy"
)

// Finding is a detection about one entity, as the book keeps it.
type Finding struct {
	ID         string    `json:"id"`
	Entity     string    `json:"entity"`          // KIND/NAME
	Agent      string    `json:"agent,omitempty"` // the agent it was observed on
	Detector   string    `json:"detector"`
	Severity   string    `json:"severity"`
	Reason     string    `json:"reason"`
	Source     string    `json:"source"`
	Level      string    `json:"level,omitempty"` // the level it sets, "" for none
	Deny       bool      `json:"deny,omitempty"`  // device reaches no service while in force
	Quarantine bool      `json:"quarantine,omitempty"`
	At         time.Time `json:"at"`
	Expires    time.Time `json:"expires,omitzero"` // zero: in force until replaced
}

// InForce reports whether the finding still counts at now.
func (f *Finding) InForce(now time.Time) bool {
	return f.Expires.IsZero() || now.Before(f.Expires)
}

// Entity is one entity's state.
type Entity struct {
	Name     string    `json:"name"`
	Level    string    `json:"level"`
	Updated  time.Time `json:"updated"`
	Findings []Finding `json:"findings,omitempty"` // in force, oldest first
}

// Change is one level change.
type Change struct {
	Entity string    `json:"entity"`
	From   string    `json:"from"`
	To     string    `json:"to"`
	At     time.Time `json:"at"`
	Reason string    `json:"reason"` // the finding that decided, or why it lapsed
}

// Book holds the entities. It is not safe for concurrent use: its owner
// serializes calls.
//
// Entities are never forgotten: a process entity with findings stays in the
// book, and in the listing, after the process exits.
type Book struct {
	policy   *policy.Policy
	entities map[string]*Entity
}

// NewBook returns an empty book judged by p.
func NewBook(p *policy.Policy) *Book {
	return &Book{policy: p, entities: map[string]*Entity{}}
}

// Load puts a persisted entity back, as it was.
func (b *Book) Load(e Entity) {
	c := e
	b.entities[e.Name] = &c
}

// SetPolicy switches to a new policy and re-derives every level, since
// starting levels and level names may have changed.
func (b *Book) SetPolicy(p *policy.Policy, now time.Time) []Change {
	b.policy = p
	var out []Change
	for _, name := range b.Names() {
		if c, ok := b.settle(b.entities[name], now, "policy changed"); ok {
			out = append(out, c)
		}
	}
	return out
}

// Add records a finding and returns the level change it caused, if any.
func (b *Book) Add(f Finding) (Change, bool) {
	e := b.entity(f.Entity, f.At)
	e.Findings = append(e.Findings, f)
	return b.settle(e, f.At, f.Reason)
}

// Expire drops findings that lapsed by now. It returns the level changes
// and the entities that lost a deny or quarantine hold.
func (b *Book) Expire(now time.Time) (changes []Change, released []string) {
	for _, name := range b.Names() {
		e := b.entities[name]
		deny, quarantine := b.Holds(name)
		if c, ok := b.settle(e, now, "finding expired"); ok {
			changes = append(changes, c)
		}
		if d, q := b.Holds(name); d != deny || q != quarantine {
			released = append(released, name)
		}
	}
	return changes, released
}

// Clear drops the deny and quarantine holds on an entity (a restore
// response) and returns the change, if any.
func (b *Book) Clear(entity string, now time.Time) (Change, bool) {
	e, ok := b.entities[entity]
	if !ok {
		return Change{}, false
	}
	kept := e.Findings[:0]
	for _, f := range e.Findings {
		if (f.Deny || f.Quarantine) && f.Level == "" {
			continue
		}
		f.Deny, f.Quarantine = false, false
		kept = append(kept, f)
	}
	e.Findings = kept
	return b.settle(e, now, "restored")
}

// NextExpiry returns the earliest expiry of a finding in force, or zero.
func (b *Book) NextExpiry() time.Time {
	var next time.Time
	for _, e := range b.entities {
		for _, f := range e.Findings {
			if !f.Expires.IsZero() && (next.IsZero() || f.Expires.Before(next)) {
				next = f.Expires
			}
		}
	}
	return next
}

func (b *Book) entity(name string, now time.Time) *Entity {
	e, ok := b.entities[name]
	if !ok {
		e = &Entity{Name: name, Level: b.start(name), Updated: now}
		b.entities[name] = e
	}
	return e
}

func (b *Book) start(name string) string {
	kind, _, _ := Split(name)
	return b.policy.StartLevel(kind)
}

// settle drops lapsed findings and derives the level: the finding in force
// that sets a known level and happened last decides (ties go to the one
// recorded last); without one, the starting level. Ordering by when a thing
// happened, not when the server heard of it, keeps an agent's late batch
// from overriding a result reported after the events in it.
func (b *Book) settle(e *Entity, now time.Time, reason string) (Change, bool) {
	kept := e.Findings[:0]
	for _, f := range e.Findings {
		if f.InForce(now) {
			kept = append(kept, f)
		}
	}
	e.Findings = kept

	level, why := b.start(e.Name), reason
	var decided time.Time
	for _, f := range e.Findings {
		if f.Level != "" && b.policy.LevelRank(f.Level) >= 0 && !f.At.Before(decided) {
			level, why, decided = f.Level, f.Reason, f.At
		}
	}
	if level == e.Level {
		return Change{}, false
	}
	c := Change{Entity: e.Name, From: e.Level, To: level, At: now, Reason: why}
	e.Level, e.Updated = level, now
	return c, true
}

// Level returns an entity's level (its starting level if the book has
// never seen it).
func (b *Book) Level(name string) string {
	if e, ok := b.entities[name]; ok {
		return e.Level
	}
	return b.start(name)
}

// Entity returns a copy of an entity's state.
func (b *Book) Entity(name string) (Entity, bool) {
	e, ok := b.entities[name]
	if !ok {
		return Entity{Name: name, Level: b.start(name)}, false
	}
	c := *e
	c.Findings = append([]Finding(nil), e.Findings...)
	return c, true
}

// Holds reports whether an entity is denied or quarantined by a finding in
// force.
func (b *Book) Holds(name string) (deny, quarantine bool) {
	e, ok := b.entities[name]
	if !ok {
		return false, false
	}
	for _, f := range e.Findings {
		deny = deny || f.Deny
		quarantine = quarantine || f.Quarantine
	}
	return deny, quarantine
}

// Names returns every entity name, sorted.
func (b *Book) Names() []string {
	names := make([]string, 0, len(b.entities))
	for n := range b.entities {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Levels returns every entity's level, keyed by name.
func (b *Book) Levels() map[string]string {
	out := make(map[string]string, len(b.entities))
	for n, e := range b.entities {
		out[n] = e.Level
	}
	return out
}

// Split cuts KIND/NAME.
func Split(entity string) (kind, name string, ok bool) {
	for i := 0; i < len(entity); i++ {
		if entity[i] == '/' {
			return entity[:i], entity[i+1:], i > 0 && i < len(entity)-1
		}
	}
	return "", entity, false
}
