package decide

import (
	"fmt"
	"net/netip"
	"sort"
	"strings"
	"time"

	vigilpb "github.com/vigilsec/vigil/gen/vigil/v1"
	"github.com/vigilsec/vigil/policy"
	"github.com/vigilsec/vigil/server/detect"
	"github.com/vigilsec/vigil/server/evaluate"
)

// addressConflict is the detector of findings on devices whose reported
// addresses other agents report too.
const addressConflict = "address-conflict"

// conflictFindings returns one finding per device that now shares
// addresses with another agent, from rebuildWorld's changes; a device whose
// conflict ended gets none.
func (e *Engine) conflictFindings(changed map[string][]netip.Addr) []detect.Finding {
	var fs []detect.Finding
	for _, agent := range sortedKeys(changed) {
		if len(changed[agent]) == 0 {
			continue
		}
		fs = append(fs, detect.Finding{Finding: evaluate.Finding{
			Entity: detect.DeviceEntity(agent), Agent: agent, Detector: addressConflict,
			Severity: "high", Source: "server",
			Reason: fmt.Sprintf("address claimed by several agents: %v admits none of them", changed[agent]),
		}})
	}
	return fs
}

// batch is what handling a set of findings changed, to be recompiled once.
type batch struct {
	dirty  map[string]bool            // entities whose level or holds changed
	all    bool                       // every table must be recompiled
	before map[string]map[string]bool // agent → services it reached before the batch
	cuts   map[string]string          // agent → reason: cut what it lost
	kills  map[string]bool            // processes already told to die
	agents []string                   // agents whose cut peers changed
}

func newBatch() *batch {
	return &batch{dirty: map[string]bool{}, before: map[string]map[string]bool{},
		cuts: map[string]string{}, kills: map[string]bool{}}
}

// handle records findings, runs the protection rules they match and
// recompiles what changed. Findings are timed by the server's clock. Called
// with mu held.
// maxObservedAge bounds how far back an agent's clock may date a finding.
const maxObservedAge = 10 * time.Minute

// observedAt dates a finding when the thing it is about happened, so a hit
// that reaches the server after a newer report cannot undo the report. A
// time from the future, from too long ago (agent clocks drift) or missing
// gives way to the server's now.
func observedAt(observed, now time.Time) time.Time {
	if observed.IsZero() || observed.After(now) || now.Sub(observed) > maxObservedAge {
		return now
	}
	return observed
}

func (e *Engine) handle(o *outbox, fs []detect.Finding) error {
	if len(fs) == 0 {
		return nil
	}
	b := newBatch()
	for i := range fs {
		if err := e.handleOne(o, b, &fs[i]); err != nil {
			return err
		}
	}
	return e.finish(o, b)
}

func (e *Engine) handleOne(o *outbox, b *batch, f *detect.Finding) error {
	f.At = observedAt(f.At, e.now())
	kind, _, _ := evaluate.Split(f.Entity)
	var matched []*policy.Protection
	for i := range e.policy.Protections {
		pr := &e.policy.Protections[i]
		if pr.When.Matches(f.Detector, kind, f.Severity) {
			matched = append(matched, pr)
			e.snapshotBefore(b, pr, f)
		}
	}
	if err := e.addFinding(o, b, f.Finding, f.Process); err != nil {
		return err
	}
	for _, pr := range matched {
		if err := e.respond(o, b, pr, f); err != nil {
			return err
		}
	}
	return nil
}

// snapshotBefore remembers which services a device reached before a cut
// response lowers it.
func (e *Engine) snapshotBefore(b *batch, pr *policy.Protection, f *detect.Finding) {
	if !pr.Respond.Cut || f.Agent == "" || b.before[f.Agent] != nil {
		return
	}
	if _, known := e.agents[f.Agent]; known {
		b.before[f.Agent] = e.admissions(e.world(), f.Agent)
	}
}

// addFinding records a finding and the level change it causes.
func (e *Engine) addFinding(o *outbox, b *batch, f evaluate.Finding, proc *vigilpb.Process) error {
	e.seq++
	f.ID = fmt.Sprintf("%d-%d", f.At.UnixNano(), e.seq)
	e.emitRecord(o, &vigilpb.Event{Kind: vigilpb.EventKind_EVENT_KIND_FINDING, TimeUnixNano: f.At.UnixNano(),
		Agent: f.Agent, Entity: f.Entity, Process: proc, Finding: toProto(f), Message: f.Reason})
	change, changed := e.book.Add(f)
	if f.Deny || f.Quarantine {
		b.dirty[f.Entity] = true
	}
	if err := e.storeEntity(f.Entity); err != nil {
		return err
	}
	if !changed {
		return nil
	}
	dirty, err := e.recordChanges(o, []evaluate.Change{change})
	for ent := range dirty {
		b.dirty[ent] = true
	}
	return err
}

// recordChanges persists and records level changes and returns the
// entities they touched.
func (e *Engine) recordChanges(o *outbox, changes []evaluate.Change) (map[string]bool, error) {
	dirty := map[string]bool{}
	for _, c := range changes {
		dirty[c.Entity] = true
		if err := e.storeChange(c); err != nil {
			return dirty, err
		}
		if err := e.storeEntity(c.Entity); err != nil {
			return dirty, err
		}
		e.emitRecord(o, &vigilpb.Event{Kind: vigilpb.EventKind_EVENT_KIND_LEVEL,
			TimeUnixNano: c.At.UnixNano(), Agent: agentOf(c.Entity), Entity: c.Entity,
			Message: fmt.Sprintf("level %s -> %s: %s", c.From, c.To, c.Reason)})
	}
	return dirty, nil
}

// agentOf returns the agent a device or process entity lives on.
func agentOf(entity string) string {
	kind, name, _ := evaluate.Split(entity)
	switch kind {
	case policy.KindDevice:
		return name
	case policy.KindProcess:
		agent, _, _ := strings.Cut(name, "/")
		return agent
	}
	return ""
}

func toProto(f evaluate.Finding) *vigilpb.Finding {
	pf := &vigilpb.Finding{Entity: f.Entity, Detector: f.Detector, Severity: f.Severity,
		Reason: f.Reason, Source: f.Source, Level: f.Level}
	if !f.Expires.IsZero() {
		pf.TtlSeconds = uint64(f.Expires.Sub(f.At).Seconds())
	}
	return pf
}

// respond carries out one protection rule for one finding.
func (e *Engine) respond(o *outbox, b *batch, pr *policy.Protection, f *detect.Finding) error {
	r := pr.Respond
	reason := fmt.Sprintf("protection %s: %s", pr.Name, f.Reason)
	steps := []func() error{
		func() error { return e.respondLevel(o, b, r.SetLevel, f, reason) },
		func() error { return e.respondLevel(o, b, r.LowerLevel, f, reason) },
		func() error { return e.respondHold(o, b, r.Deny, false, f, reason) },
		func() error { return e.respondHold(o, b, r.Quarantine, true, f, reason) },
	}
	for _, step := range steps {
		if err := step(); err != nil {
			return err
		}
	}
	if r.Kill {
		e.respondKill(o, b, f, reason)
	}
	if r.KillOnExec {
		if err := e.respondKillOnExec(b, f, reason); err != nil {
			return err
		}
	}
	if r.Cut && f.Agent != "" {
		b.cuts[f.Agent] = reason
	}
	if r.Restore {
		return e.respondRestore(o, b, f, reason)
	}
	return nil
}

// target resolves a response target kind to an entity, from the finding.
func target(kind string, f *detect.Finding) (string, bool) {
	fkind, _, _ := evaluate.Split(f.Entity)
	switch {
	case kind == fkind:
		return f.Entity, true
	case kind == policy.KindDevice && f.Agent != "":
		return detect.DeviceEntity(f.Agent), true
	case kind == policy.KindProcess && f.Process != nil && f.Agent != "":
		return detect.ProcessEntity(f.Agent, f.Process), true
	case kind == policy.KindUser && f.Process != nil && f.Process.User != "":
		return policy.KindUser + "/" + f.Process.User, true
	}
	return "", false
}

func (e *Engine) respondLevel(o *outbox, b *batch, lc *policy.LevelChange, f *detect.Finding,
	reason string) error {
	if lc == nil {
		return nil
	}
	ent, ok := target(lc.Target, f)
	if !ok {
		return nil
	}
	level := lc.Level
	if lc.Steps > 0 {
		rank := max(e.policy.LevelRank(e.book.Level(ent))-lc.Steps, 0)
		level = e.policy.Levels[rank]
	}
	nf := f.Finding
	nf.Entity, nf.Level, nf.Reason, nf.Deny, nf.Quarantine = ent, level, reason, false, false
	nf.Expires = expiry(f.At, lc.For)
	return e.addFinding(o, b, nf, f.Process)
}

func (e *Engine) respondHold(o *outbox, b *batch, h *policy.Hold, quarantine bool,
	f *detect.Finding, reason string) error {
	if h == nil || f.Agent == "" {
		return nil
	}
	nf := f.Finding
	nf.Entity, nf.Level, nf.Reason = detect.DeviceEntity(f.Agent), "", reason
	nf.Deny, nf.Quarantine = !quarantine, quarantine
	nf.Expires = expiry(f.At, h.For)
	return e.addFinding(o, b, nf, f.Process)
}

// respondKill kills the finding's process with its descendants: a hostile
// process that forked at once would otherwise leave its children running.
func (e *Engine) respondKill(o *outbox, b *batch, f *detect.Finding, reason string) {
	if f.Process == nil || f.Agent == "" {
		return
	}
	key := detect.ProcessEntity(f.Agent, f.Process)
	if b.kills[key] {
		return
	}
	b.kills[key] = true
	e.emitInstruction(o, f.Agent, &vigilpb.Instruction{Kind: vigilpb.InstructionKind_INSTRUCTION_KIND_KILL,
		Pid: f.Process.Pid, StartTimeNs: f.Process.StartTimeNs, Tree: true, Reason: reason})
}

func (e *Engine) respondKillOnExec(b *batch, f *detect.Finding, reason string) error {
	if f.Process == nil || f.Process.Sha256 == "" {
		return nil
	}
	h := strings.ToLower(f.Process.Sha256)
	if _, have := e.killOnExec[h]; have {
		return nil
	}
	e.killOnExec[h] = reason
	b.all = true
	if err := e.kv.Set([]byte(keyKillPrefix+h), []byte(reason)); err != nil {
		return fmt.Errorf("store kill-on-exec %s: %w", h, err)
	}
	return nil
}

// respondRestore lifts the holds on the finding's device and the cuts its
// lowered level caused.
func (e *Engine) respondRestore(o *outbox, b *batch, f *detect.Finding, reason string) error {
	if f.Agent == "" {
		return nil
	}
	dev := detect.DeviceEntity(f.Agent)
	if c, ok := e.book.Clear(dev, f.At); ok {
		if _, err := e.recordChanges(o, []evaluate.Change{c}); err != nil {
			return err
		}
	}
	b.dirty[dev] = true
	if err := e.storeEntity(dev); err != nil {
		return err
	}
	return e.liftDeviceCuts(o, b, dev, reason)
}

func (e *Engine) liftDeviceCuts(o *outbox, b *batch, dev, reason string) error {
	for _, agent := range sortedCutAgents(e.cuts) {
		for _, peer := range sortedPeers(e.cuts[agent]) {
			if c := e.cuts[agent][peer]; c.Origin == originResponse && c.Device == dev {
				if err := e.liftCut(o, agent, peer, reason); err != nil {
					return err
				}
				b.agents = append(b.agents, agent)
			}
		}
	}
	return nil
}

// finish cuts what lowered devices lost and recompiles the affected tables.
func (e *Engine) finish(o *outbox, b *batch) error {
	for _, agent := range sortedKeys(b.cuts) {
		if b.before[agent] == nil {
			continue
		}
		touched, err := e.cutLost(o, agent, b.before[agent], b.cuts[agent])
		if err != nil {
			return err
		}
		b.agents = append(b.agents, touched...)
	}
	if b.all {
		return e.recompute(o, e.allAgents())
	}
	return e.recompute(o, append(e.affected(b.dirty), b.agents...))
}

func expiry(at time.Time, d time.Duration) time.Time {
	if d <= 0 {
		return time.Time{}
	}
	return at.Add(d)
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
