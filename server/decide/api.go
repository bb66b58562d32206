package decide

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	vigilpb "github.com/vigilsec/vigil/gen/vigil/v1"
	"github.com/vigilsec/vigil/policy"
	"github.com/vigilsec/vigil/server/detect"
	"github.com/vigilsec/vigil/server/evaluate"
)

// ValidatePolicy checks a document without applying it.
func (e *Engine) ValidatePolicy(doc *vigilpb.PolicyDocument) []*vigilpb.PolicyError {
	_, errs := policy.Parse(doc.GetFilename(), []byte(doc.GetYaml()))
	return policyErrors(errs)
}

func policyErrors(errs []policy.Error) []*vigilpb.PolicyError {
	out := make([]*vigilpb.PolicyError, 0, len(errs))
	for _, e := range errs {
		out = append(out, &vigilpb.PolicyError{Filename: e.File, Line: uint32(e.Line),
			Column: uint32(e.Column), Field: e.Field, Message: e.Message})
	}
	return out
}

// ApplyPolicy validates, stores and activates a document, re-derives every
// level and pushes every table that changed. A rejected document changes
// nothing.
func (e *Engine) ApplyPolicy(ctx context.Context, doc *vigilpb.PolicyDocument,
	appliedBy string) (uint64, []*vigilpb.PolicyError, error) {
	p, errs := policy.Parse(doc.GetFilename(), []byte(doc.GetYaml()))
	if len(errs) > 0 {
		return 0, policyErrors(errs), nil
	}
	o := e.lock()
	v, err := e.applyPolicy(o, p, doc, appliedBy)
	return v, nil, joinErrs(err, e.unlock(o))
}

func (e *Engine) applyPolicy(o *outbox, p *policy.Policy, doc *vigilpb.PolicyDocument,
	by string) (uint64, error) {
	now := e.now()
	sp := storedPolicy{Version: e.policyVersion + 1, Filename: doc.GetFilename(), YAML: doc.GetYaml(),
		AppliedUnix: now.Unix(), AppliedBy: by}
	if err := e.storePolicy(sp); err != nil {
		return 0, err
	}
	e.policy, e.policyVersion = p, sp.Version
	e.detect.SetPolicy(p)
	e.rebuildWorld()
	e.windows = e.windowKey(now)
	if _, err := e.recordChanges(o, e.book.SetPolicy(p, now)); err != nil {
		return 0, err
	}
	e.emitRecord(o, &vigilpb.Event{Kind: vigilpb.EventKind_EVENT_KIND_POLICY, TimeUnixNano: now.UnixNano(),
		Entity: "policy", Message: fmt.Sprintf("policy version %d (%s) applied by %s", sp.Version, sp.Filename, by)})
	return sp.Version, e.recompute(o, e.allAgents())
}

// Policy returns a stored policy version (0: the running one).
func (e *Engine) Policy(version uint64) (*vigilpb.GetPolicyResponse, error) {
	e.mu.Lock()
	if version == 0 {
		version = e.policyVersion
	}
	e.mu.Unlock()
	if version == 0 {
		return nil, status.Error(codes.NotFound, "no policy has been applied")
	}
	sp, ok, err := e.loadPolicy(version)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, status.Errorf(codes.NotFound, "policy version %d not found", version)
	}
	return policyResponse(sp, true), nil
}

func policyResponse(sp storedPolicy, text bool) *vigilpb.GetPolicyResponse {
	r := &vigilpb.GetPolicyResponse{Version: sp.Version, AppliedUnix: sp.AppliedUnix, AppliedBy: sp.AppliedBy,
		Document: &vigilpb.PolicyDocument{Filename: sp.Filename}}
	if text {
		r.Document.Yaml = sp.YAML
	}
	return r
}

// PolicyHistory lists stored versions, newest first, without text.
func (e *Engine) PolicyHistory() ([]*vigilpb.GetPolicyResponse, error) {
	var out []*vigilpb.GetPolicyResponse
	err := e.scanJSON(keyPolicyPrefix, func(_ string, raw []byte) error {
		var sp storedPolicy
		if err := json.Unmarshal(raw, &sp); err != nil {
			return fmt.Errorf("decode policy: %w", err)
		}
		out = append(out, policyResponse(sp, false))
		return nil
	})
	sort.Slice(out, func(i, j int) bool { return out[i].Version > out[j].Version })
	return out, err
}

// AgentOnline records an agent's hello and returns the full table it must
// enforce now. New or changed addresses recompile every table that names
// them.
func (e *Engine) AgentOnline(ctx context.Context, agent string,
	hello *vigilpb.Hello) (*vigilpb.VerdictTable, error) {
	o := e.lock()
	t, err := e.agentOnline(o, agent, hello)
	return t, joinErrs(err, e.unlock(o))
}

func (e *Engine) agentOnline(o *outbox, agent string,
	hello *vigilpb.Hello) (*vigilpb.VerdictTable, error) {
	r, known := e.agents[agent]
	if !known {
		r = &agentRecord{Name: agent}
		e.agents[agent] = r
	}
	addrs := hello.GetAddresses()
	moved := !known || fmt.Sprint(parseAddrs(addrs)) != fmt.Sprint(parseAddrs(r.Addresses))
	r.Addresses, r.Scope, r.Online = addrs, hello.GetScope(), true
	o.full = agent
	conflicts := e.rebuildWorld()
	if err := e.handle(o, e.conflictFindings(conflicts)); err != nil {
		return nil, err
	}
	if err := e.handle(o, e.detect.Posture(agent, hello.GetPosture(), e.now())); err != nil {
		return nil, err
	}
	r.Posture = hello.GetPosture()

	targets := []string{agent}
	switch {
	case len(conflicts) > 0 || moved && e.hosts[agent]:
		targets = e.allAgents()
	case moved:
		targets = e.affected(map[string]bool{detect.DeviceEntity(agent): true})
	}
	if err := e.recompute(o, targets); err != nil {
		return nil, err
	}
	return proto.Clone(r.Table).(*vigilpb.VerdictTable), nil
}

// AgentRevoked forgets a revoked agent: its record, table and process
// state go, so its addresses admit it to no service, and every other table
// is recompiled without it. A later enrollment under the name starts anew.
func (e *Engine) AgentRevoked(ctx context.Context, agent string) error {
	o := e.lock()
	err := e.agentRevoked(o, agent)
	return joinErrs(err, e.unlock(o))
}

func (e *Engine) agentRevoked(o *outbox, agent string) error {
	if _, ok := e.agents[agent]; !ok {
		return nil
	}
	delete(e.agents, agent)
	if err := e.kv.Delete([]byte(keyAgentPrefix + agent)); err != nil {
		return fmt.Errorf("forget agent %s: %w", agent, err)
	}
	e.detect.Forget(agent)
	e.rebuildWorld()
	return e.recompute(o, e.allAgents())
}

// AgentOffline records that an agent's stream closed.
func (e *Engine) AgentOffline(agent string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if r, ok := e.agents[agent]; ok {
		r.Online = false
	}
}

// TableAcked records the table version an agent enforces.
func (e *Engine) TableAcked(agent string, version uint64) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if r, ok := e.agents[agent]; ok {
		r.Acked = version
	}
}

// Ingest runs the detectors over a batch of an agent's events and acts on
// what they find.
func (e *Engine) Ingest(ctx context.Context, agent string, events []*vigilpb.Event) error {
	o := e.lock()
	users := len(e.detect.Users(agent))
	var fs []detect.Finding
	for _, ev := range events {
		fs = append(fs, e.detect.Event(agent, ev)...)
	}
	err := e.handle(o, fs)
	if wa, ok := e.worldAgents[agent]; ok && err == nil && len(e.detect.Users(agent)) != users {
		wa.Users = e.detect.Users(agent)
		err = e.recompute(o, []string{agent})
	}
	return joinErrs(err, e.unlock(o))
}

// Posture records a posture update and runs the posture detectors.
func (e *Engine) Posture(ctx context.Context, agent string, p *vigilpb.Posture) error {
	o := e.lock()
	err := e.handle(o, e.detect.Posture(agent, p, e.now()))
	if r, ok := e.agents[agent]; ok {
		r.Posture = p
	}
	return joinErrs(err, e.unlock(o))
}

// Counters records an agent's counters; kernel event loss is a finding.
func (e *Engine) Counters(ctx context.Context, agent string, c *vigilpb.Counters) error {
	o := e.lock()
	err := e.handle(o, e.detect.Counters(agent, c, e.now()))
	return joinErrs(err, e.unlock(o))
}

// SetIndicators replaces the indicators of a threat-intelligence feed (nil
// removes it). Hits name the feed and the indicator id.
func (e *Engine) SetIndicators(feed string, inds []policy.Indicator) {
	o := e.lock()
	err := e.setIndicators(o, feed, inds)
	if err = joinErrs(err, e.unlock(o)); err != nil {
		e.log.Error("set indicators", "feed", feed, "err", err)
	}
}

// setIndicators stores a feed's indicators and, when its hashes changed,
// recompiles every table: a protection rule that kills threat-intel hashes
// at exec arms them in every kernel before they are first seen.
func (e *Engine) setIndicators(o *outbox, feed string, inds []policy.Indicator) error {
	before := e.detect.FeedHashes()
	e.detect.SetFeed(feed, inds)
	key := []byte(keyFeedPrefix + feed)
	var err error
	if inds == nil {
		err = e.kv.Delete(key)
	} else {
		err = e.putJSON(string(key), inds)
	}
	if err != nil {
		return fmt.Errorf("store feed %s: %w", feed, err)
	}
	if slices.Equal(before, e.detect.FeedHashes()) {
		return nil
	}
	return e.recompute(o, e.allAgents())
}

// Report records a result from an existing security system as a finding on
// an entity, with an optional level and time to live. Protection rules on
// the "report" detector apply to it.
func (e *Engine) Report(ctx context.Context,
	req *vigilpb.ReportRequest) (*vigilpb.ReportResponse, error) {
	o := e.lock()
	level, err := e.report(o, req)
	return &vigilpb.ReportResponse{Level: level}, joinErrs(err, e.unlock(o))
}

func (e *Engine) report(o *outbox, req *vigilpb.ReportRequest) (string, error) {
	kind, name, ok := evaluate.Split(req.GetEntity())
	if !ok || !validKind(kind) {
		return "", status.Errorf(codes.InvalidArgument,
			"entity %q: want KIND/NAME with kind user, device, service or process", req.GetEntity())
	}
	if err := e.checkExists(kind, name); err != nil {
		return "", err
	}
	if req.GetLevel() != "" && e.policy.LevelRank(req.GetLevel()) < 0 {
		return "", status.Errorf(codes.InvalidArgument, "unknown level %q: want one of %v",
			req.GetLevel(), e.policy.Levels)
	}
	severity := req.GetSeverity()
	if severity == "" {
		severity = "info"
	} else if policy.SeverityRank(severity) < 0 {
		return "", status.Errorf(codes.InvalidArgument, "unknown severity %q", severity)
	}
	now := e.now()
	f := evaluate.Finding{Entity: req.GetEntity(), Agent: agentOf(req.GetEntity()), Detector: detect.Report,
		Severity: severity, Reason: req.GetReason(), Source: req.GetSource(), Level: req.GetLevel(), At: now,
		Expires: expiry(now, time.Duration(req.GetTtlSeconds())*time.Second)}
	if err := e.handle(o, []detect.Finding{{Finding: f}}); err != nil {
		return "", err
	}
	return e.book.Level(req.GetEntity()), nil
}

// checkExists refuses a report about a device (or a process on a device)
// no enrolled agent is, or a service the policy does not name, so that a
// report never makes up an entity. Called with mu held.
func (e *Engine) checkExists(kind, name string) error {
	switch kind {
	case policy.KindDevice, policy.KindProcess:
		agent := agentOf(kind + "/" + name)
		if _, ok := e.agents[agent]; !ok {
			return status.Errorf(codes.NotFound, "no enrolled agent %q", agent)
		}
	case policy.KindService:
		for _, s := range e.policy.Services {
			if s.Name == name {
				return nil
			}
		}
		return status.Errorf(codes.NotFound, "no service %q in the policy", name)
	}
	return nil
}

func validKind(k string) bool {
	return k == policy.KindUser || k == policy.KindDevice || k == policy.KindService || k == policy.KindProcess
}

// Entities lists entities of a kind ("" for all): every entity with a
// finding, every agent's device, every service and every user the policy
// names, sorted by name.
func (e *Engine) Entities(kind string) ([]*vigilpb.Entity, error) {
	if kind != "" && !validKind(kind) {
		return nil, status.Errorf(codes.InvalidArgument, "unknown entity kind %q", kind)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	names := map[string]bool{}
	for _, n := range e.book.Names() {
		names[n] = true
	}
	for a := range e.agents {
		names[detect.DeviceEntity(a)] = true
	}
	for _, s := range e.policy.Services {
		names[policy.KindService+"/"+s.Name] = true
	}
	for _, u := range e.policy.Users() {
		names[policy.KindUser+"/"+u] = true
	}
	var out []*vigilpb.Entity
	for _, n := range sortedKeys(names) {
		if k, _, _ := evaluate.Split(n); kind == "" || k == kind {
			out = append(out, e.entityProto(n))
		}
	}
	return out, nil
}

func (e *Engine) entityProto(name string) *vigilpb.Entity {
	ent, _ := e.book.Entity(name)
	pe := &vigilpb.Entity{Name: name, Level: ent.Level, UpdatedUnix: ent.Updated.Unix()}
	if ent.Updated.IsZero() {
		pe.UpdatedUnix = 0
	}
	for _, f := range ent.Findings {
		pe.Findings = append(pe.Findings, toProto(f))
	}
	return pe
}

// Level returns an entity's current level.
func (e *Engine) Level(entity string) string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.book.Level(entity)
}

// RuleName returns the name of the running policy's rule with compiled id
// id, or "" when there is none.
func (e *Engine) RuleName(id uint32) string {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, r := range e.policy.Rules {
		if r.ID == id {
			return r.Name
		}
	}
	return ""
}

// Cut adds peer ("IP" or "IP:PORT") to the agent's cut peers until Restore,
// and pushes the table diff. The caller sends the cut instruction.
func (e *Engine) Cut(ctx context.Context, agent, peer string) error {
	if !validPeer(peer) {
		return status.Errorf(codes.InvalidArgument, "peer %q: want IP or IP:PORT", peer)
	}
	o := e.lock()
	err := e.adminCut(o, agent, peer)
	return joinErrs(err, e.unlock(o))
}

func (e *Engine) adminCut(o *outbox, agent, peer string) error {
	c := cut{Origin: originAdmin}
	e.cutsOf(agent)[peer] = c
	if err := e.storeCut(agent, peer, c); err != nil {
		return err
	}
	if _, known := e.agents[agent]; !known {
		return nil
	}
	return e.recompute(o, []string{agent})
}

// Restore removes peer from the agent's cut peers, whatever cut it, and
// pushes the table diff. The caller sends the restore instruction.
func (e *Engine) Restore(ctx context.Context, agent, peer string) error {
	if !validPeer(peer) {
		return status.Errorf(codes.InvalidArgument, "peer %q: want IP or IP:PORT", peer)
	}
	o := e.lock()
	err := e.adminRestore(o, agent, peer)
	return joinErrs(err, e.unlock(o))
}

func (e *Engine) adminRestore(o *outbox, agent, peer string) error {
	if _, ok := e.cuts[agent][peer]; !ok {
		return nil
	}
	delete(e.cuts[agent], peer)
	if err := e.deleteCut(agent, peer); err != nil {
		return err
	}
	if _, known := e.agents[agent]; !known {
		return nil
	}
	return e.recompute(o, []string{agent})
}

func validPeer(peer string) bool {
	if _, err := netip.ParseAddr(peer); err == nil {
		return true
	}
	ap, err := netip.ParseAddrPort(peer)
	return err == nil && ap.Port() != 0
}

func joinErrs(a, b error) error {
	if a == nil {
		return b
	}
	if b == nil {
		return a
	}
	return fmt.Errorf("%w; %w", a, b)
}

// History returns an entity's level changes, oldest first.
func (e *Engine) History(entity string) ([]evaluate.Change, error) {
	var out []evaluate.Change
	err := e.scanJSON(keyHistoryPrefix+entity+"/", func(_ string, raw []byte) error {
		var c evaluate.Change
		if err := json.Unmarshal(raw, &c); err != nil {
			return fmt.Errorf("decode history of %s: %w", entity, err)
		}
		out = append(out, c)
		return nil
	})
	return out, err
}
