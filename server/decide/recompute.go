package decide

import (
	"fmt"
	"net/netip"
	"sort"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"

	vigilpb "github.com/vigilsec/vigil/gen/vigil/v1"
	"github.com/vigilsec/vigil/policy"
	"github.com/vigilsec/vigil/server/detect"
	"github.com/vigilsec/vigil/server/evaluate"
)

// rebuildWorld refreshes the compile view of agents and the set of service
// hosts. Called with mu held whenever agents, addresses or the policy
// change. It returns the agents whose contested addresses changed, with
// the addresses now contested (empty when none is any more).
//
// BUG: an agent's addresses are taken on its word, so an enrolled agent can
// still claim an address no other agent reports, such as that of a host
// without an agent, and be admitted by it.
func (e *Engine) rebuildWorld() map[string][]netip.Addr {
	claims := e.parseClaims()
	contested := contestedAddrs(claims)
	e.worldAgents = make(map[string]*policy.Agent, len(e.agents))
	conflicts := map[string]string{}
	changed := map[string][]netip.Addr{}
	for name := range e.agents {
		kept, lost := splitContested(claims[name], contested)
		e.worldAgents[name] = &policy.Agent{Name: name, Addresses: kept, Users: e.detect.Users(name)}
		if len(lost) > 0 {
			conflicts[name] = fmt.Sprint(lost)
		}
		if conflicts[name] != e.conflicts[name] {
			changed[name] = lost
		}
	}
	e.conflicts = conflicts
	e.rebuildHosts()
	return changed
}

// parseClaims parses every agent's reported addresses.
func (e *Engine) parseClaims() map[string][]netip.Addr {
	claims := make(map[string][]netip.Addr, len(e.agents))
	for name, r := range e.agents {
		claims[name] = parseAddrs(r.Addresses)
	}
	return claims
}

// contestedAddrs returns the addresses more than one agent claims: none of
// them may admit any of its claimants, since the server cannot tell which
// one, if any, owns it.
func contestedAddrs(claims map[string][]netip.Addr) map[netip.Addr]bool {
	owner := map[netip.Addr]string{}
	contested := map[netip.Addr]bool{}
	for name, addrs := range claims {
		for _, a := range addrs {
			if o, ok := owner[a]; ok && o != name {
				contested[a] = true
			}
			owner[a] = name
		}
	}
	return contested
}

// splitContested splits addrs into those only their agent claims and the
// contested ones.
func splitContested(addrs []netip.Addr, contested map[netip.Addr]bool) (kept, lost []netip.Addr) {
	for _, a := range addrs {
		if contested[a] {
			lost = append(lost, a)
		} else {
			kept = append(kept, a)
		}
	}
	return kept, lost
}

// rebuildHosts refreshes the set of agents that run a service.
func (e *Engine) rebuildHosts() {
	e.hosts = map[string]bool{}
	for _, s := range e.policy.Services {
		for _, a := range s.Agents {
			e.hosts[a] = true
		}
	}
}

// localhost4 is the address every IPv4 host calls itself.
var localhost4 = netip.AddrFrom4([4]byte{127, 0, 0, 1})

// parseAddrs keeps the addresses that identify a host to its peers:
// 127.0.0.1, ::1, link-local, multicast and unspecified addresses are shared
// by every host and would make one agent's verdict apply to all. Other
// loopback addresses are kept: hosts sharing one machine (a test bed) are
// told apart by one address each in 127.0.0.0/8.
func parseAddrs(in []string) []netip.Addr {
	var out []netip.Addr
	for _, s := range in {
		if pfx, err := netip.ParsePrefix(s); err == nil {
			s = pfx.Addr().String()
		}
		a, err := netip.ParseAddr(s)
		if err != nil {
			continue
		}
		a = a.Unmap()
		if a == localhost4 || a == netip.IPv6Loopback() || a.IsLinkLocalUnicast() ||
			a.IsUnspecified() || a.IsMulticast() {
			continue
		}
		out = append(out, a)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Less(out[j]) })
	return out
}

// world assembles the compiler's input from the current state.
func (e *Engine) world() *policy.World {
	w := &policy.World{Now: e.now(), PolicyVersion: e.policyVersion, Agents: e.worldAgents,
		Levels: e.book.Levels(), Denied: map[string]bool{}, Quarantined: map[string]bool{},
		Cuts: map[string][]string{}}
	for name := range e.agents {
		deny, quarantine := e.book.Holds(detect.DeviceEntity(name))
		w.Denied[detect.DeviceEntity(name)] = deny
		w.Quarantined[name] = quarantine
	}
	for agent, peers := range e.cuts {
		for peer := range peers {
			w.Cuts[agent] = append(w.Cuts[agent], peer)
		}
	}
	for h := range e.killOnExec {
		w.KillOnExec = append(w.KillOnExec, h)
	}
	w.FeedHashes = e.detect.FeedHashes()
	return w
}

func (e *Engine) allAgents() []string {
	names := make([]string, 0, len(e.agents))
	for n := range e.agents {
		names = append(names, n)
	}
	return names
}

// affected returns the agents whose tables depend on the entities given: a
// device's own agent and every service host; a user's every agent it ran on.
func (e *Engine) affected(entities map[string]bool) []string {
	set := map[string]bool{}
	for ent := range entities {
		kind, name, _ := evaluate.Split(ent)
		switch kind {
		case policy.KindDevice:
			set[name] = true
			for h := range e.hosts {
				set[h] = true
			}
		case policy.KindUser:
			for a, wa := range e.worldAgents {
				if _, ok := wa.Users[name]; ok {
					set[a] = true
				}
			}
		}
	}
	out := make([]string, 0, len(set))
	for a := range set {
		if _, known := e.agents[a]; known {
			out = append(out, a)
		}
	}
	sort.Strings(out)
	return out
}

// recompute compiles the named agents' tables, lifts response cuts whose
// device regained its service, and pushes a diff for every table that
// changed.
func (e *Engine) recompute(o *outbox, agents []string) error {
	w := e.world()
	if lifted, err := e.liftRecoveredCuts(o, w); err != nil {
		return err
	} else if len(lifted) > 0 {
		agents = append(agents, lifted...)
		w = e.world()
	}
	sort.Strings(agents)
	var changes []tableChange
	for i, name := range agents {
		if i > 0 && agents[i-1] == name {
			continue
		}
		if c, ok := e.recomputeAgent(w, name); ok {
			changes = append(changes, c)
		}
	}
	return e.commitTables(o, changes)
}

// tableChange is an agent's recompiled table and the one it replaces (nil
// before its first table).
type tableChange struct {
	r    *agentRecord
	prev *vigilpb.VerdictTable
}

// recomputeAgent compiles an agent's table and installs it in memory when
// it changed; commitTables stores and pushes it.
func (e *Engine) recomputeAgent(w *policy.World, name string) (tableChange, bool) {
	r, ok := e.agents[name]
	if !ok {
		return tableChange{}, false
	}
	next := policy.CompileAgent(e.policy, w, name)
	prev := r.Table
	if prev != nil {
		next.Version = prev.Version
		if proto.Equal(prev, next) {
			return tableChange{}, false
		}
	}
	next.Version++
	r.Table = next
	return tableChange{r: r, prev: prev}, true
}

// commitTables stores the changed tables, then queues their diffs: no diff
// reaches an agent before its table is durable.
func (e *Engine) commitTables(o *outbox, changes []tableChange) error {
	rs := make([]*agentRecord, len(changes))
	for i, c := range changes {
		rs[i] = c.r
	}
	if err := e.storeAgents(rs); err != nil {
		return err
	}
	for _, c := range changes {
		if c.prev != nil {
			e.emitDiff(o, c.r.Name, Diff(c.prev, c.r.Table))
			e.quarantineFlip(o, c.r.Name, c.prev.Quarantined, c.r.Table.Quarantined)
		}
	}
	return nil
}

func (e *Engine) quarantineFlip(o *outbox, agent string, was, is bool) {
	switch {
	case !was && is:
		e.emitInstruction(o, agent, &vigilpb.Instruction{Kind: vigilpb.InstructionKind_INSTRUCTION_KIND_QUARANTINE,
			Reason: "quarantined by protection rule"})
	case was && !is:
		e.emitInstruction(o, agent, &vigilpb.Instruction{Kind: vigilpb.InstructionKind_INSTRUCTION_KIND_RELEASE,
			Reason: "quarantine lifted"})
	}
}

// liftRecoveredCuts removes the response cuts whose device is admitted to
// their service again, pushes the restore instructions and returns the
// agents whose cut peers changed.
func (e *Engine) liftRecoveredCuts(o *outbox, w *policy.World) ([]string, error) {
	var changed []string
	for _, agent := range sortedCutAgents(e.cuts) {
		for _, peer := range sortedPeers(e.cuts[agent]) {
			c := e.cuts[agent][peer]
			if c.Origin != originResponse || !e.admitted(w, c.Device, c.Service) {
				continue
			}
			reason := "access restored: " + c.Device + " may reach service/" + c.Service
			if err := e.liftCut(o, agent, peer, reason); err != nil {
				return nil, err
			}
			changed = append(changed, agent)
		}
	}
	return changed, nil
}

func (e *Engine) liftCut(o *outbox, agent, peer, reason string) error {
	delete(e.cuts[agent], peer)
	if err := e.deleteCut(agent, peer); err != nil {
		return err
	}
	e.emitInstruction(o, agent, &vigilpb.Instruction{Kind: vigilpb.InstructionKind_INSTRUCTION_KIND_RESTORE,
		Peer: peer, Reason: reason})
	return nil
}

// admitted reports whether a device entity's agent may reach a service.
func (e *Engine) admitted(w *policy.World, device, service string) bool {
	_, name, _ := evaluate.Split(device)
	svc, ok := e.policy.Service(service)
	wa, known := w.Agents[name]
	if !ok || !known {
		return true
	}
	_, v := e.policy.Admission(w, wa, svc)
	return v == vigilpb.Verdict_VERDICT_ALLOW
}

// admissions lists the services a device's agent may reach now.
func (e *Engine) admissions(w *policy.World, agent string) map[string]bool {
	out := map[string]bool{}
	for _, s := range e.policy.Services {
		if e.admitted(w, detect.DeviceEntity(agent), s.Name) {
			out[s.Name] = true
		}
	}
	return out
}

// cutLost cuts a device's connections to the services it lost since before:
// on the device, the services' addresses and ports; on each service host,
// the device's addresses. It returns the agents given new cuts.
func (e *Engine) cutLost(o *outbox, agent string, before map[string]bool,
	reason string) ([]string, error) {
	w := e.world()
	after := e.admissions(w, agent)
	var touched []string
	for i := range e.policy.Services {
		s := &e.policy.Services[i]
		if !before[s.Name] || after[s.Name] {
			continue
		}
		t, err := e.cutService(o, w, agent, s, reason)
		if err != nil {
			return nil, err
		}
		touched = append(touched, t...)
	}
	return touched, nil
}

func (e *Engine) cutService(o *outbox, w *policy.World, agent string, s *policy.Service,
	reason string) ([]string, error) {
	c := cut{Origin: originResponse, Device: detect.DeviceEntity(agent), Service: s.Name}
	type pair struct{ agent, peer string }
	var cuts []pair
	for _, host := range s.Agents {
		wh, ok := w.Agents[host]
		if !ok || host == agent {
			continue
		}
		for _, peer := range servicePeers(wh.Addresses, s.Ports) {
			cuts = append(cuts, pair{agent, peer})
		}
		for _, a := range w.Agents[agent].Addresses {
			cuts = append(cuts, pair{host, a.String()})
		}
	}
	var touched []string
	for _, p := range cuts {
		added, err := e.addCut(o, p.agent, p.peer, c, reason)
		if err != nil {
			return nil, err
		}
		if added {
			touched = append(touched, p.agent)
		}
	}
	return touched, nil
}

func servicePeers(addrs []netip.Addr, ports []policy.PortRange) []string {
	var out []string
	for _, a := range addrs {
		for _, pr := range ports {
			if pr.Min != pr.Max {
				out = append(out, a.String())
				continue
			}
			out = append(out, netip.AddrPortFrom(a, pr.Min).String())
		}
	}
	return out
}

// addCut records a cut and pushes its instruction, unless the peer is
// already cut there.
func (e *Engine) addCut(o *outbox, agent, peer string, c cut, reason string) (bool, error) {
	if _, dup := e.cutsOf(agent)[peer]; dup {
		return false, nil
	}
	e.cutsOf(agent)[peer] = c
	if err := e.storeCut(agent, peer, c); err != nil {
		return false, err
	}
	e.emitInstruction(o, agent, &vigilpb.Instruction{Kind: vigilpb.InstructionKind_INSTRUCTION_KIND_CUT,
		Peer: peer, Reason: reason})
	return true, nil
}

// windowKey says which time-windowed rules are in force at now; a change
// means every table must be recompiled.
func (e *Engine) windowKey(now time.Time) string {
	var b strings.Builder
	for i := range e.policy.Rules {
		r := &e.policy.Rules[i]
		if len(r.Windows) > 0 && r.InForce(now) {
			fmt.Fprintf(&b, "%d,", r.ID)
		}
	}
	return b.String()
}

func sortedCutAgents(m map[string]map[string]cut) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func sortedPeers(m map[string]cut) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
