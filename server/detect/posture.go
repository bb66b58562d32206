package detect

import (
	"fmt"
	"sort"
	"strings"
	"time"

	vigilpb "github.com/vigilsec/vigil/gen/vigil/v1"
	"github.com/vigilsec/vigil/policy"
)

// Posture checks a posture report against the previous one (fingerprint
// change) and the policy's posture rules. A violation is reported when it
// first appears or changes, not on every report.
func (s *State) Posture(agent string, p *vigilpb.Posture, at time.Time) []Finding {
	if p == nil {
		return nil
	}
	a := s.agent(agent)
	var out []Finding
	if prev := a.posture; prev != nil {
		if what := fingerprintDiff(prev, p); what != "" {
			out = append(out, finding(DeviceEntity(agent), agent, FingerprintChange, "high", agent, at, nil,
				"device fingerprint changed: %s", what))
		}
	}
	a.posture = p
	for _, r := range s.posture {
		if f, ok := s.postureRule(agent, a, r, p, at); ok {
			out = append(out, f)
		}
	}
	return out
}

func fingerprintDiff(a, b *vigilpb.Posture) string {
	var diffs []string
	check := func(name, x, y string) {
		if x != y {
			diffs = append(diffs, fmt.Sprintf("%s %q -> %q", name, x, y))
		}
	}
	check("host id", a.HostId, b.HostId)
	check("kernel", a.KernelVersion, b.KernelVersion)
	check("hardware", a.Hardware, b.Hardware)
	return strings.Join(diffs, ", ")
}

func (s *State) postureRule(agent string, a *agentState, r policy.PostureRule,
	p *vigilpb.Posture, at time.Time) (Finding, bool) {
	if !policy.Covers(r.Agents, agent) {
		return Finding{}, false
	}
	why := violations(r, p)
	prev := a.violating[r.Name]
	a.violating[r.Name] = why
	if why == "" || why == prev {
		return Finding{}, false
	}
	return finding(DeviceEntity(agent), agent, Posture, r.Severity, agent, at, nil,
		"posture rule %s: %s", r.Name, why), true
}

// violations lists what p breaks of r, "" when it complies.
func violations(r policy.PostureRule, p *vigilpb.Posture) string {
	var out []string
	if len(r.OS) > 0 && !contains(r.OS, p.Os) {
		out = append(out, fmt.Sprintf("os %q not allowed", p.Os))
	}
	if r.KernelMin != "" && !policy.KernelAtLeast(p.KernelVersion, r.KernelMin) {
		out = append(out, fmt.Sprintf("kernel %s below %s", p.KernelVersion, r.KernelMin))
	}
	for _, name := range r.RequiredProcesses {
		if !contains(p.ProcessNames, name) {
			out = append(out, fmt.Sprintf("required process %s not running", name))
		}
	}
	for _, name := range r.ForbiddenProcesses {
		if contains(p.ProcessNames, name) {
			out = append(out, fmt.Sprintf("forbidden process %s running", name))
		}
	}
	for _, port := range r.ForbiddenPorts {
		if contains(p.Listening, port) {
			out = append(out, fmt.Sprintf("forbidden port %s listening", port))
		}
	}
	sort.Strings(out)
	return strings.Join(out, "; ")
}

// loss reports events the kernel could not deliver, announced by a loss
// event; the counters that follow already include them.
func (a *agentState) loss(agent string, lost uint64, at time.Time) []Finding {
	if lost == 0 {
		return nil
	}
	a.lost += lost
	return []Finding{finding(DeviceEntity(agent), agent, EventLoss, "medium", agent, at, nil,
		"kernel lost %d events", lost)}
}

// Counters reports kernel event loss: any increase of events_lost beyond
// what was reported already (a counter that went down means the agent
// restarted and starts a new baseline).
func (s *State) Counters(agent string, c *vigilpb.Counters, at time.Time) []Finding {
	if c == nil {
		return nil
	}
	a := s.agent(agent)
	prev := a.lost
	a.lost = c.EventsLost
	if c.EventsLost <= prev {
		return nil
	}
	return []Finding{finding(DeviceEntity(agent), agent, EventLoss, "medium", agent, at, nil,
		"kernel lost %d events (%d in total)", c.EventsLost-prev, c.EventsLost)}
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}
