// Package policy is Vigil's policy language: it parses and validates the
// versioned YAML policy document, compiles a policy and the server's view of
// the world into one verdict table per agent, and judges a connection against
// a compiled table the way the agent's kernel does.
//
// The server's decision engine (server/decide) and vigilctl's offline
// validation call it. The package is pure: it owns no goroutines, files or
// locks, and reads nothing but the bytes it is given.
//
// Table semantics, shared with the agent: an egress entry matches a
// connection when its destination prefix holds the address (IPv4-mapped IPv6
// addresses count as IPv4), the port lies in its inclusive range, the
// protocol matches (ANY matches TCP and UDP) and every subject field it sets
// equals the process's. Among matches, those of the longest prefix count and
// the first of them in table order decides; no match means the table's
// default verdict. The compiler orders each destination's entries by
// precedence (the narrowest port range, then the most subject fields set,
// then deny before audit before allow), so the most specific entry decides.
// It also turns every allow lying inside a deny into a deny, so deny beats
// allow whatever the specificity.
package policy

import (
	"net/netip"
	"strings"
	"time"

	vigilpb "github.com/vigilsec/vigil/gen/vigil/v1"
)

// FormatVersion is the only policy document format this package reads.
const FormatVersion = 1

// Entity kinds, the KIND in KIND/NAME.
const (
	KindUser    = "user"
	KindDevice  = "device"
	KindService = "service"
	KindProcess = "process"
)

// Any is the explicit wildcard a device or user list must contain to mean
// every device or every user; an empty list never does.
const Any = "*"

// Policy is a parsed, validated policy. It is read-only after Parse returns
// and safe to share between goroutines.
type Policy struct {
	Levels      []string // ordered, lowest first
	Defaults    Defaults
	Groups      []Group
	Services    []Service
	Rules       []Rule
	Protections []Protection
	Posture     []PostureRule
	Indicators  []Indicator
	KillOnExec  []string // sha256 indicators killed at exec on every agent
	Detectors   DetectorSettings

	levelRank map[string]int
	services  map[string]*Service
	groups    map[string]*Group
}

// Defaults are the policy-wide settings.
type Defaults struct {
	Levels       map[string]string // starting level per entity kind
	Traffic      vigilpb.Verdict   // for traffic no rule covers
	UnknownPeers vigilpb.Verdict   // inbound peers without an agent
	FailMode     vigilpb.FailMode
}

// Group names a set of users.
type Group struct {
	Name  string
	Users []string
}

// PortRange is an inclusive range of ports.
type PortRange struct {
	Min, Max uint16
}

// Service is a protected service: where it runs and who may reach it.
type Service struct {
	Name     string
	Agents   []string // agent names of the hosts it runs on
	Ports    []PortRange
	Protocol vigilpb.Protocol
	MinLevel string
}

// Rule is an access rule. Its subjects reach its services and destinations
// when the rule is in force (its time windows) and, for an allow rule, when
// their level is at least the required one.
type Rule struct {
	ID           uint32 // stable: derived from the name
	Name         string
	Allow        bool
	Subjects     []Subject
	Services     []string
	Destinations []Destination
	Windows      []Window
}

// Subject selects who a rule applies to. Every set selector narrows it.
type Subject struct {
	Devices     []string // agent names or Any
	Users       []string // user names, numeric uids, or Any
	Groups      []string
	Executables []string // absolute paths
	SHA256      []string
	Level       string // minimum level, "" for none beyond the service's
}

// Destination is an explicit network destination of a rule.
type Destination struct {
	CIDRs    []netip.Prefix
	Ports    []PortRange
	Protocol vigilpb.Protocol
}

// Window is a recurring time window, in UTC.
type Window struct {
	Days     [7]bool // indexed by time.Weekday
	From, To int     // minutes since midnight; To < From spans midnight
}

// Protection is a protection rule: findings matching When trigger Respond.
type Protection struct {
	Name    string
	When    Condition
	Respond Response
}

// Condition selects findings. Every set field must match.
type Condition struct {
	Detectors   []string
	EntityKind  string // "" for any
	MinSeverity string // "" for any
}

// Response lists what a protection rule does.
type Response struct {
	SetLevel   *LevelChange
	LowerLevel *LevelChange
	Deny       *Hold
	Quarantine *Hold
	Kill       bool
	KillOnExec bool
	Cut        bool
	Restore    bool
}

// LevelChange sets a target's level, or lowers it by Steps, for a duration
// (0: until replaced).
type LevelChange struct {
	Target string // entity kind: device, user, process or service
	Level  string
	Steps  int
	For    time.Duration
}

// Hold keeps a device denied or quarantined for a duration (0: until
// restored).
type Hold struct {
	For time.Duration
}

// PostureRule is a compliance rule checked against device posture.
type PostureRule struct {
	Name               string
	Agents             []string // agent names or Any
	OS                 []string
	KernelMin          string
	RequiredProcesses  []string
	ForbiddenProcesses []string
	ForbiddenPorts     []string // "tcp:PORT" or "udp:PORT"
	Severity           string
}

// DetectorSettings tune the server's detectors.
type DetectorSettings struct {
	ScanCount           int
	ScanWindow          time.Duration
	ShellParentsAllowed []string // executables allowed to spawn shells after accepting
	PrivilegeParentsOK  []string // executables allowed to start uid 0 children
	WritablePrefixes    []string // exec from these is reported
}

// Severities, lowest first.
var Severities = []string{"info", "low", "medium", "high", "critical"}

// SeverityRank orders a severity name; unknown names rank -1.
func SeverityRank(s string) int {
	for i, v := range Severities {
		if v == s {
			return i
		}
	}
	return -1
}

// LevelRank orders a level name; unknown names rank -1.
func (p *Policy) LevelRank(level string) int {
	r, ok := p.levelRank[level]
	if !ok {
		return -1
	}
	return r
}

// Lowest returns the lowest level.
func (p *Policy) Lowest() string { return p.Levels[0] }

// StartLevel returns the starting level of an entity kind.
func (p *Policy) StartLevel(kind string) string {
	return p.Defaults.Levels[kind]
}

// Service returns a service by name.
func (p *Policy) Service(name string) (*Service, bool) {
	s, ok := p.services[name]
	return s, ok
}

// Users returns the user names the policy mentions (in groups and rule
// subjects), sorted, without the wildcard and numeric uids.
func (p *Policy) Users() []string {
	var out []string
	for _, g := range p.Groups {
		out = append(out, g.Users...)
	}
	for _, r := range p.Rules {
		for _, s := range r.Subjects {
			out = append(out, s.Users...)
		}
	}
	kept := out[:0]
	for _, u := range sortedUnique(out) {
		if u != Any && strings.Trim(u, "0123456789") != "" {
			kept = append(kept, u)
		}
	}
	return kept
}

// RuleByID returns the rule with a compiled id.
func (p *Policy) RuleByID(id uint32) (*Rule, bool) {
	for i := range p.Rules {
		if p.Rules[i].ID == id {
			return &p.Rules[i], true
		}
	}
	return nil, false
}

// InForce reports whether the rule's time windows admit t (no windows:
// always).
func (r *Rule) InForce(t time.Time) bool {
	if len(r.Windows) == 0 {
		return true
	}
	t = t.UTC()
	for _, w := range r.Windows {
		if w.admits(t) {
			return true
		}
	}
	return false
}

func (w Window) admits(t time.Time) bool {
	m := t.Hour()*60 + t.Minute()
	if w.From <= w.To {
		return w.Days[t.Weekday()] && m >= w.From && m < w.To
	}
	if m >= w.From {
		return w.Days[t.Weekday()]
	}
	return m < w.To && w.Days[(t.Weekday()+6)%7]
}

// Matches reports whether a finding falls under the condition.
func (c Condition) Matches(detector, entityKind, severity string) bool {
	if len(c.Detectors) > 0 && !contains(c.Detectors, detector) {
		return false
	}
	if c.EntityKind != "" && c.EntityKind != entityKind {
		return false
	}
	return c.MinSeverity == "" || SeverityRank(severity) >= SeverityRank(c.MinSeverity)
}

// Covers reports whether a device or agent list names agent.
func Covers(list []string, agent string) bool {
	return contains(list, Any) || contains(list, agent)
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}
