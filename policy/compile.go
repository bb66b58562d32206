package policy

import (
	"fmt"
	"net/netip"
	"sort"
	"strconv"
	"time"

	vigilpb "github.com/vigilsec/vigil/gen/vigil/v1"
)

// World is the server's view of everything a policy is compiled against.
// Compile only reads it.
type World struct {
	Now           time.Time         // decides which time windows are in force
	PolicyVersion uint64            // copied into every table
	Agents        map[string]*Agent // by name
	Levels        map[string]string // entity name → level; absent: starting level
	Denied        map[string]bool   // device entities denied every service
	Quarantined   map[string]bool   // agent names
	Cuts          map[string][]string
	KillOnExec    []string // hashes added at run time (feed indicator hits)
	FeedHashes    []string // SHA-256 indicators from threat-intel feeds
}

// Agent is what the compiler needs to know about one agent.
type Agent struct {
	Name      string
	Addresses []netip.Addr
	Users     map[string]uint32 // user name → uid, learned from its processes
}

// Level returns an entity's level in the world, or its starting level.
func (p *Policy) Level(w *World, entity string) string {
	if l, ok := w.Levels[entity]; ok && p.LevelRank(l) >= 0 {
		return l
	}
	kind, _, _ := cutKind(entity)
	return p.StartLevel(kind)
}

func cutKind(entity string) (kind, name string, ok bool) {
	for i := 0; i < len(entity); i++ {
		if entity[i] == '/' {
			return entity[:i], entity[i+1:], true
		}
	}
	return "", entity, false
}

// Compile compiles every agent's table. Compiling the same inputs twice gives
// identical tables.
func Compile(p *Policy, w *World) map[string]*vigilpb.VerdictTable {
	out := make(map[string]*vigilpb.VerdictTable, len(w.Agents))
	for name := range w.Agents {
		out[name] = CompileAgent(p, w, name)
	}
	return out
}

// CompileAgent compiles one agent's table (version 0: the caller numbers
// it). An agent the world does not know gets a table of defaults.
func CompileAgent(p *Policy, w *World, name string) *vigilpb.VerdictTable {
	t := &vigilpb.VerdictTable{
		PolicyVersion: w.PolicyVersion,
		DefaultEgress: p.Defaults.Traffic,
		FailMode:      p.Defaults.FailMode,
		Quarantined:   w.Quarantined[name],
		CutPeers:      sortedUnique(w.Cuts[name]),
		KillOnExec:    p.killOnExec(w),
	}
	a, ok := w.Agents[name]
	if !ok {
		a = &Agent{Name: name}
	}
	t.Egress = p.closeServices(resolveEgress(p.egress(w, a)), w, a)
	t.ProtectedPorts, t.Ingress = p.ingress(w, a)
	return t
}

// closeServices denies, by rule 0, every service destination on other
// agents that no rule gave a whole-device entry for: a protected service is
// reached only through a rule, whatever the default for uncovered traffic.
// Entries that select users or executables stay more specific than it.
func (p *Policy) closeServices(es []*vigilpb.EgressEntry, w *World, a *Agent) []*vigilpb.EgressEntry {
	covered := map[string]bool{}
	for _, e := range es {
		if subjectFields(e.Subject) == 0 {
			covered[destKey(e.Destination, e.PortMin, e.PortMax, e.Protocol)] = true
		}
	}
	var closing []*vigilpb.EgressEntry
	for i := range p.Services {
		svc := &p.Services[i]
		for _, host := range sortedUnique(svc.Agents) {
			if host == a.Name {
				continue
			}
			closing = appendHost(closing, w.Agents[host], svc.Ports, svc.Protocol, 0,
				&vigilpb.Subject{}, vigilpb.Verdict_VERDICT_DENY)
		}
	}
	for _, e := range closing {
		if !covered[destKey(e.Destination, e.PortMin, e.PortMax, e.Protocol)] {
			es = append(es, e)
		}
	}
	return sortEgress(es)
}

func destKey(dst string, lo, hi uint32, proto vigilpb.Protocol) string {
	return fmt.Sprintf("%s|%d|%d|%d", dst, lo, hi, proto)
}

func (p *Policy) killOnExec(w *World) []string {
	hashes := append([]string(nil), p.KillOnExec...)
	for _, pr := range p.Protections {
		if !pr.Respond.KillOnExec || !pr.When.Matches("threat-intel", pr.When.EntityKind, "critical") {
			continue
		}
		for _, ind := range p.Indicators {
			if ind.Kind == IndicatorSHA256 {
				hashes = append(hashes, ind.SHA256)
			}
		}
		hashes = append(hashes, w.FeedHashes...)
	}
	return sortedUnique(append(hashes, w.KillOnExec...))
}

// selector is one compiled subject on one agent, with the entities whose
// levels it is judged by.
type selector struct {
	subject  *vigilpb.Subject
	entities []string
}

// selectors expands a rule subject into the table subjects it means on agent
// a. A subject naming users that never ran on a yields nothing.
func (p *Policy) selectors(s *Subject, a *Agent) []selector {
	if len(s.Devices) > 0 && !Covers(s.Devices, a.Name) {
		return nil
	}
	device := KindDevice + "/" + a.Name
	base := []selector{{subject: &vigilpb.Subject{}, entities: []string{device}}}
	if users := p.subjectUsers(s); len(users) > 0 {
		base = p.userSelectors(users, a, device)
	}
	base = crossPaths(base, s.Executables)
	return crossHashes(base, s.SHA256)
}

func (p *Policy) subjectUsers(s *Subject) []string {
	users := append([]string(nil), s.Users...)
	for _, g := range s.Groups {
		users = append(users, p.groups[g].Users...)
	}
	return sortedUnique(users)
}

func (p *Policy) userSelectors(users []string, a *Agent, device string) []selector {
	var out []selector
	for _, u := range users {
		if u == Any {
			return []selector{{subject: &vigilpb.Subject{}, entities: []string{device}}}
		}
		uid, ok := a.Users[u]
		if n, err := strconv.ParseUint(u, 10, 32); err == nil {
			uid, ok = uint32(n), true
		}
		if ok {
			out = append(out, selector{
				subject:  &vigilpb.Subject{Uid: &uid},
				entities: []string{device, KindUser + "/" + u},
			})
		}
	}
	return out
}

func crossPaths(in []selector, paths []string) []selector {
	if len(paths) == 0 {
		return in
	}
	var out []selector
	for _, s := range in {
		for _, path := range paths {
			c := cloneSubject(s.subject)
			c.ExecutablePath = path
			out = append(out, selector{subject: c, entities: s.entities})
		}
	}
	return out
}

func crossHashes(in []selector, hashes []string) []selector {
	if len(hashes) == 0 {
		return in
	}
	var out []selector
	for _, s := range in {
		for _, h := range hashes {
			c := cloneSubject(s.subject)
			c.ExecutableSha256 = h
			out = append(out, selector{subject: c, entities: s.entities})
		}
	}
	return out
}

func cloneSubject(s *vigilpb.Subject) *vigilpb.Subject {
	c := &vigilpb.Subject{ExecutablePath: s.ExecutablePath, ExecutableSha256: s.ExecutableSha256}
	if s.Uid != nil {
		uid := *s.Uid
		c.Uid = &uid
	}
	return c
}

// Admits reports whether entities (judged together, by their lowest level)
// reach required under rule r, and what verdict follows.
func (p *Policy) Admits(w *World, r *Rule, entities []string, required string) vigilpb.Verdict {
	if !r.Allow {
		return vigilpb.Verdict_VERDICT_DENY
	}
	for _, e := range entities {
		if w.Denied[e] || p.LevelRank(p.Level(w, e)) < p.LevelRank(required) {
			return vigilpb.Verdict_VERDICT_DENY
		}
	}
	return vigilpb.Verdict_VERDICT_ALLOW
}

// Required returns the higher of two levels ("" counts as the lowest).
func (p *Policy) Required(a, b string) string {
	if p.LevelRank(b) > p.LevelRank(a) {
		return b
	}
	if a == "" {
		return p.Lowest()
	}
	return a
}

func (p *Policy) egress(w *World, a *Agent) []*vigilpb.EgressEntry {
	var out []*vigilpb.EgressEntry
	for i := range p.Rules {
		r := &p.Rules[i]
		if !r.InForce(w.Now) {
			continue
		}
		for j := range r.Subjects {
			for _, sel := range p.selectors(&r.Subjects[j], a) {
				out = p.ruleEgress(out, w, r, &r.Subjects[j], sel)
			}
		}
	}
	return out
}

func (p *Policy) ruleEgress(out []*vigilpb.EgressEntry, w *World, r *Rule, s *Subject,
	sel selector) []*vigilpb.EgressEntry {
	for _, name := range r.Services {
		svc := p.services[name]
		v := p.Admits(w, r, sel.entities, p.Required(svc.MinLevel, s.Level))
		for _, host := range sortedUnique(svc.Agents) {
			out = appendHost(out, w.Agents[host], svc.Ports, svc.Protocol, r.ID, sel.subject, v)
		}
	}
	for _, d := range r.Destinations {
		v := p.Admits(w, r, sel.entities, p.Required(s.Level, ""))
		for _, pfx := range d.CIDRs {
			out = appendPorts(out, pfx.String(), d.Ports, d.Protocol, r.ID, sel.subject, v)
		}
	}
	return out
}

func appendHost(out []*vigilpb.EgressEntry, host *Agent, ports []PortRange, proto vigilpb.Protocol,
	id uint32, subj *vigilpb.Subject, v vigilpb.Verdict) []*vigilpb.EgressEntry {
	if host == nil {
		return out
	}
	for _, addr := range host.Addresses {
		out = appendPorts(out, netip.PrefixFrom(addr, addr.BitLen()).String(), ports, proto, id, subj, v)
	}
	return out
}

func appendPorts(out []*vigilpb.EgressEntry, dst string, ports []PortRange, proto vigilpb.Protocol,
	id uint32, subj *vigilpb.Subject, v vigilpb.Verdict) []*vigilpb.EgressEntry {
	for _, pr := range ports {
		out = append(out, &vigilpb.EgressEntry{
			RuleId: id, Destination: dst, PortMin: uint32(pr.Min), PortMax: uint32(pr.Max),
			Protocol: proto, Subject: cloneSubject(subj), Verdict: v,
		})
	}
	return out
}

// ingress compiles the protected ports and ingress entries of the services
// agent a runs. Every other known agent is admitted or refused by its device
// level; user and executable selectors are enforced on the subject's own
// agent only, since a peer's packets carry neither.
func (p *Policy) ingress(w *World, a *Agent) ([]*vigilpb.ProtectedPort, []*vigilpb.IngressEntry) {
	var ports []*vigilpb.ProtectedPort
	var entries []*vigilpb.IngressEntry
	for i := range p.Services {
		svc := &p.Services[i]
		if !contains(svc.Agents, a.Name) {
			continue
		}
		for _, pr := range svc.Ports {
			ports = append(ports, &vigilpb.ProtectedPort{PortMin: uint32(pr.Min), PortMax: uint32(pr.Max),
				Protocol: svc.Protocol, DefaultVerdict: p.Defaults.UnknownPeers})
		}
		entries = append(entries, p.serviceIngress(w, a, svc)...)
	}
	return ports, sortIngress(entries)
}

func (p *Policy) serviceIngress(w *World, host *Agent, svc *Service) []*vigilpb.IngressEntry {
	var out []*vigilpb.IngressEntry
	for _, name := range sortedKeys(w.Agents) {
		peer := w.Agents[name]
		if name == host.Name {
			continue
		}
		id, v := p.Admission(w, peer, svc)
		for _, addr := range peer.Addresses {
			for _, pr := range svc.Ports {
				out = append(out, &vigilpb.IngressEntry{RuleId: id,
					Peer:    netip.PrefixFrom(addr, addr.BitLen()).String(),
					PortMin: uint32(pr.Min), PortMax: uint32(pr.Max), Protocol: svc.Protocol, Verdict: v})
			}
		}
	}
	return out
}

// Admission decides whether a peer agent's device may reach a service, and
// by which rule. A deny rule covering the whole device wins over any allow;
// a device no allow admits is refused, by the rule its level fell short of
// (0 when no rule covers it).
func (p *Policy) Admission(w *World, peer *Agent, svc *Service) (uint32, vigilpb.Verdict) {
	var allowID, denyID, shortID uint32
	device := []string{KindDevice + "/" + peer.Name}
	for i := range p.Rules {
		r := &p.Rules[i]
		if !r.InForce(w.Now) || !contains(r.Services, svc.Name) {
			continue
		}
		for j := range r.Subjects {
			s := &r.Subjects[j]
			if len(s.Devices) > 0 && !Covers(s.Devices, peer.Name) {
				continue
			}
			v := p.Admits(w, r, device, p.Required(svc.MinLevel, s.Level))
			switch {
			case !r.Allow && !s.narrowed():
				denyID = firstID(denyID, r.ID)
			case v == vigilpb.Verdict_VERDICT_ALLOW:
				allowID = firstID(allowID, r.ID)
			case r.Allow:
				shortID = firstID(shortID, r.ID)
			}
		}
	}
	switch {
	case denyID != 0:
		return denyID, vigilpb.Verdict_VERDICT_DENY
	case allowID != 0:
		return allowID, vigilpb.Verdict_VERDICT_ALLOW
	}
	return shortID, vigilpb.Verdict_VERDICT_DENY
}

func firstID(have, id uint32) uint32 {
	if have != 0 {
		return have
	}
	return id
}

// narrowed reports whether the subject selects less than whole devices.
func (s *Subject) narrowed() bool {
	return len(s.Users)+len(s.Groups)+len(s.Executables)+len(s.SHA256) > 0
}

func sortIngress(es []*vigilpb.IngressEntry) []*vigilpb.IngressEntry {
	keys := make(map[*vigilpb.IngressEntry]string, len(es))
	for _, e := range es {
		keys[e] = ingressKey(e)
	}
	sort.SliceStable(es, func(i, j int) bool { return keys[es[i]] < keys[es[j]] })
	out := es[:0]
	for i, e := range es {
		if i > 0 && keys[e] == keys[es[i-1]] {
			continue
		}
		out = append(out, e)
	}
	return out
}

// EgressKey renders every field of an entry; equal keys mean equal entries.
func EgressKey(e *vigilpb.EgressEntry) string {
	return fmt.Sprintf("%s|%05d|%05d|%d|%s|%d|%d", e.Destination, e.PortMin, e.PortMax, e.Protocol,
		subjectKey(e.Subject), e.Verdict, e.RuleId)
}

// IngressKey renders every field of an entry; equal keys mean equal entries.
func IngressKey(e *vigilpb.IngressEntry) string { return ingressKey(e) }

func ingressKey(e *vigilpb.IngressEntry) string {
	b := make([]byte, 0, 64)
	b = append(b, e.Peer...)
	for _, n := range []uint64{uint64(e.PortMin), uint64(e.PortMax), uint64(e.Protocol),
		uint64(e.Verdict), uint64(e.RuleId)} {
		b = append(b, '|')
		b = appendPadded(b, n)
	}
	return string(b)
}

// appendPadded appends n zero-padded to five digits, so that keys of ports
// sort numerically.
func appendPadded(b []byte, n uint64) []byte {
	for d := uint64(10000); d > 1 && n < d; d /= 10 {
		b = append(b, '0')
	}
	return strconv.AppendUint(b, n, 10)
}

func subjectKey(s *vigilpb.Subject) string {
	if s == nil {
		return ""
	}
	uid := "-"
	if s.Uid != nil {
		uid = strconv.FormatUint(uint64(*s.Uid), 10)
	}
	return uid + "," + s.ExecutablePath + "," + s.ExecutableSha256 + "," + s.CgroupPath
}

func sortedUnique(in []string) []string {
	if len(in) == 0 {
		return nil
	}
	out := append([]string(nil), in...)
	sort.Strings(out)
	j := 0
	for i := range out {
		if i == 0 || out[i] != out[j-1] {
			out[j] = out[i]
			j++
		}
	}
	return out[:j]
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
