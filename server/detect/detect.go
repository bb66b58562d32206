// Package detect turns the agents' event stream, posture reports and
// counters into findings: threat-intelligence hits on addresses and file
// hashes, exec from world-writable places, shells spawned by network
// services, bursts of refused connects, privilege gain, device fingerprint
// changes, posture rule violations and kernel event loss.
//
// The decision engine (server/decide) owns one State and calls it with
// every event; the State keeps what the detectors need to remember (a
// process table per agent, recent refusals, last postures and counters) and
// nothing else. It does no I/O and is not safe for concurrent use.
//
// The process table lives in memory only: after a server restart, explain
// judges older processes as unknown and rules naming users compile no
// entries on an agent until it reports an exec by that user again.
//
// Shell-from-service heuristic: a process counts as a network service once
// it has accepted an inbound connection (an inbound ACCEPT event names it).
// A shell (sh, bash, dash, zsh, ksh, csh, tcsh, fish, ash, busybox) exec'd
// by such a process, or by a process whose executable accepted connections
// on the same agent, is reported, unless the parent's executable is in the
// policy's shell_parents_allowed list (sshd, login, tmux and the like by
// default), whose job is to start shells.
package detect

import (
	"fmt"
	"path"
	"sort"
	"strings"
	"time"

	vigilpb "github.com/vigilsec/vigil/gen/vigil/v1"
	"github.com/vigilsec/vigil/policy"
	"github.com/vigilsec/vigil/server/evaluate"
)

// Detector names, as findings carry them and protection rules match them.
const (
	ThreatIntel       = "threat-intel"
	ExecWritable      = "exec-writable-dir"
	ShellFromService  = "shell-from-service"
	ConnectBurst      = "connect-burst"
	PrivilegeGain     = "privilege-gain"
	FingerprintChange = "fingerprint-change"
	Posture           = "posture"
	EventLoss         = "event-loss"
	Report            = "report"
)

// maxProcesses bounds each agent's process table.
const maxProcesses = 1 << 16

// Finding is a detection with the context responses need.
type Finding struct {
	evaluate.Finding
	Process *vigilpb.Process // the process involved, when any
}

// State is what the detectors remember between calls.
type State struct {
	settings   policy.DetectorSettings
	posture    []policy.PostureRule
	policyInds []policy.Indicator
	feeds      map[string][]policy.Indicator
	hashes     map[string]policy.Indicator // sha256 → indicator
	nets       []policy.Indicator

	agents map[string]*agentState
}

type agentState struct {
	procs     map[uint32]*vigilpb.Process
	servers   map[uint32]bool // pids seen accepting inbound connections
	serverExe map[string]bool // executables seen accepting inbound connections
	refusals  []time.Time     // recent denied connects, oldest first
	posture   *vigilpb.Posture
	violating map[string]string // posture rule → last violation reported
	lost      uint64
	users     map[string]uint32
}

// NewState returns a State with no policy: it detects nothing policy-driven
// until SetPolicy.
func NewState() *State {
	return &State{feeds: map[string][]policy.Indicator{}, agents: map[string]*agentState{}}
}

// SetPolicy takes the detector settings, posture rules and indicators of p.
func (s *State) SetPolicy(p *policy.Policy) {
	s.settings, s.posture, s.policyInds = p.Detectors, p.Posture, p.Indicators
	s.reindex()
}

// SetFeed replaces the indicators of one feed (nil removes the feed).
func (s *State) SetFeed(feed string, inds []policy.Indicator) {
	if inds == nil {
		delete(s.feeds, feed)
	} else {
		s.feeds[feed] = inds
	}
	s.reindex()
}

// FeedHashes returns the SHA-256 indicators of every feed, sorted.
func (s *State) FeedHashes() []string {
	var out []string
	for _, feed := range sortedFeeds(s.feeds) {
		for _, ind := range s.feeds[feed] {
			if ind.Kind == policy.IndicatorSHA256 {
				out = append(out, strings.ToLower(ind.SHA256))
			}
		}
	}
	sort.Strings(out)
	return out
}

func (s *State) reindex() {
	s.hashes, s.nets = map[string]policy.Indicator{}, nil
	add := func(ind policy.Indicator) {
		switch ind.Kind {
		case policy.IndicatorSHA256:
			s.hashes[strings.ToLower(ind.SHA256)] = ind
		case policy.IndicatorIP:
			s.nets = append(s.nets, ind)
		}
	}
	for _, ind := range s.policyInds {
		add(ind)
	}
	for _, feed := range sortedFeeds(s.feeds) {
		for _, ind := range s.feeds[feed] {
			add(ind)
		}
	}
}

func (s *State) agent(name string) *agentState {
	a, ok := s.agents[name]
	if !ok {
		a = &agentState{procs: map[uint32]*vigilpb.Process{}, servers: map[uint32]bool{},
			serverExe: map[string]bool{}, violating: map[string]string{}, users: map[string]uint32{}}
		s.agents[name] = a
	}
	return a
}

// ProcessEntity names a process entity: process/AGENT/PID@START_NS.
func ProcessEntity(agent string, p *vigilpb.Process) string {
	return fmt.Sprintf("process/%s/%d@%d", agent, p.Pid, p.StartTimeNs)
}

// DeviceEntity names an agent's device entity.
func DeviceEntity(agent string) string { return "device/" + agent }

// Process returns an agent's process by pid, from exec and fork events seen.
func (s *State) Process(agent string, pid uint32) (*vigilpb.Process, bool) {
	a, ok := s.agents[agent]
	if !ok {
		return nil, false
	}
	p, ok := a.procs[pid]
	return p, ok
}

// Users returns the user names and uids seen on an agent.
func (s *State) Users(agent string) map[string]uint32 {
	out := map[string]uint32{}
	if a, ok := s.agents[agent]; ok {
		for n, u := range a.users {
			out[n] = u
		}
	}
	return out
}

// Forget drops everything remembered about an agent.
func (s *State) Forget(agent string) { delete(s.agents, agent) }

func finding(entity, agent, detector, severity, source string, at time.Time, proc *vigilpb.Process,
	format string, args ...any) Finding {
	return Finding{Finding: evaluate.Finding{
		Entity: entity, Agent: agent, Detector: detector, Severity: severity, Source: source,
		Reason: fmt.Sprintf(format, args...), At: at,
	}, Process: proc}
}

func base(exe string) string { return path.Base(exe) }

func sortedFeeds(m map[string][]policy.Indicator) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
