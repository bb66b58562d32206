package decide

import (
	"fmt"
	"net/netip"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	vigilpb "github.com/vigilsec/vigil/gen/vigil/v1"
	"github.com/vigilsec/vigil/policy"
	"github.com/vigilsec/vigil/server/detect"
)

// Explain judges a connection against the agent's current table the way
// its kernel does, and says which rule decided, which levels were compared
// and which findings set them.
func (e *Engine) Explain(req *vigilpb.ExplainRequest) (*vigilpb.ExplainResponse, error) {
	dst, err := netip.ParseAddrPort(req.GetDestination())
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "destination %q: want IP:PORT", req.GetDestination())
	}
	proto := req.GetProtocol()
	if proto == vigilpb.Protocol_PROTOCOL_UNSPECIFIED {
		proto = vigilpb.Protocol_PROTOCOL_TCP
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	r, ok := e.agents[req.GetAgent()]
	if !ok || r.Table == nil {
		return nil, status.Errorf(codes.NotFound, "agent %q has no table", req.GetAgent())
	}
	x := &explainer{e: e, agent: req.GetAgent(), table: r.Table,
		dst:   netip.AddrPortFrom(dst.Addr().Unmap(), dst.Port()),
		proto: proto, resp: &vigilpb.ExplainResponse{SubjectLevels: map[string]string{}}}
	x.subject(req.GetPid())
	x.judge()
	return x.resp, nil
}

// explainer builds one explanation. It runs with mu held.
type explainer struct {
	e     *Engine
	agent string
	table *vigilpb.VerdictTable
	dst   netip.AddrPort
	proto vigilpb.Protocol
	proc  *vigilpb.Process
	resp  *vigilpb.ExplainResponse
}

func (x *explainer) say(format string, args ...any) {
	x.resp.Reasons = append(x.resp.Reasons, fmt.Sprintf(format, args...))
}

// subject names the connecting process and the entities judged.
func (x *explainer) subject(pid uint32) {
	proto := strings.ToLower(strings.TrimPrefix(x.proto.String(), "PROTOCOL_"))
	p, known := x.e.detect.Process(x.agent, pid)
	if pid == 0 || !known {
		x.say("an unknown process (pid %d) on %s connects to %s/%s; it matches only entries without a subject",
			pid, x.agent, x.dst, proto)
	} else {
		x.proc = p
		x.say("process %d (%s, uid %d%s) on %s connects to %s/%s", p.Pid, p.Executable, p.Uid,
			userSuffix(p.User), x.agent, x.dst, proto)
	}
	x.level(detect.DeviceEntity(x.agent))
	if x.proc != nil && x.proc.User != "" {
		x.level(policy.KindUser + "/" + x.proc.User)
	}
	if x.proc != nil {
		x.level(detect.ProcessEntity(x.agent, x.proc))
	}
}

func userSuffix(user string) string {
	if user == "" {
		return ""
	}
	return " " + user
}

// level reports an entity's level and the findings behind it.
func (x *explainer) level(entity string) {
	ent, _ := x.e.book.Entity(entity)
	x.resp.SubjectLevels[entity] = ent.Level
	var behind, other []string
	for _, f := range ent.Findings {
		x.resp.Findings = append(x.resp.Findings, toProto(f))
		if f.Level != "" {
			behind = append(behind, fmt.Sprintf("%s set %s: %s", f.Detector, f.Level, f.Reason))
		} else {
			other = append(other, fmt.Sprintf("%s: %s", f.Detector, f.Reason))
		}
	}
	switch {
	case len(behind) > 0:
		x.say("%s is at %s; %s", entity, ent.Level, behind[len(behind)-1])
	case len(other) > 0:
		x.say("%s is at %s (its starting level); findings in force: %s", entity, ent.Level, strings.Join(other, "; "))
	default:
		x.say("%s is at %s (its starting level)", entity, ent.Level)
	}
}

// judge looks the connection up and explains the deciding entry.
func (x *explainer) judge() {
	x.service()
	proc := policy.Process{}
	if x.proc != nil {
		proc = policy.Process{Known: true, UID: x.proc.Uid, Path: x.proc.Executable, SHA256: x.proc.Sha256}
	}
	entry := policy.Lookup(x.table, proc, x.dst, x.proto)
	blocked := x.cutOrQuarantine()
	defer func() {
		if blocked {
			x.resp.Verdict = vigilpb.Verdict_VERDICT_DENY
			x.say("verdict: deny, whatever the rules say, while the block holds")
		}
	}()
	if entry == nil {
		x.resp.Verdict, x.resp.Rule = x.table.DefaultEgress, "default"
		x.say("no rule covers it: the policy's default for uncovered traffic is %s", verdictWord(x.table.DefaultEgress))
		return
	}
	x.resp.Verdict, x.resp.RuleId = entry.Verdict, entry.RuleId
	rule, ok := x.e.policy.RuleByID(entry.RuleId)
	if entry.RuleId == 0 {
		x.resp.Rule = "no-rule"
		x.say("the destination is a protected service and no rule admits this subject to it: %s",
			verdictWord(entry.Verdict))
		return
	}
	if !ok {
		x.resp.Rule = fmt.Sprintf("rule-%d", entry.RuleId)
		x.say("entry of unknown rule %d decides: %s", entry.RuleId, verdictWord(entry.Verdict))
		return
	}
	x.resp.Rule = rule.Name
	x.ruleReason(rule, entry)
}

func (x *explainer) ruleReason(rule *policy.Rule, entry *vigilpb.EgressEntry) {
	v := verdictWord(entry.Verdict)
	switch {
	case !rule.Allow:
		x.say("rule %s denies it: %s", rule.Name, v)
	case x.resp.RequiredLevel != "":
		cmp := "<"
		if entry.Verdict == vigilpb.Verdict_VERDICT_ALLOW {
			cmp = ">="
		}
		x.say("rule %s admits subjects at %s or above; %s %s %s: %s", rule.Name, x.resp.RequiredLevel,
			x.lowest(entry.GetSubject().Uid != nil), cmp, x.resp.RequiredLevel, v)
	default:
		x.say("rule %s decides: %s", rule.Name, v)
	}
}

// lowest is the lowest level compared: the device's, and the user's when
// the deciding entry selects a user.
func (x *explainer) lowest(withUser bool) string {
	low := ""
	for ent, l := range x.resp.SubjectLevels {
		kind, _, _ := strings.Cut(ent, "/")
		if kind == policy.KindProcess || kind == policy.KindUser && !withUser {
			continue
		}
		if low == "" || x.e.policy.LevelRank(l) < x.e.policy.LevelRank(low) {
			low = l
		}
	}
	return low
}

// service names the service the destination belongs to, if any.
func (x *explainer) service() {
	for i := range x.e.policy.Services {
		s := &x.e.policy.Services[i]
		if !servesAt(x.e, s, x.dst) {
			continue
		}
		x.resp.Service, x.resp.RequiredLevel = s.Name, s.MinLevel
		x.say("%s is service %s on %s, minimum level %s", x.dst, s.Name, strings.Join(s.Agents, ", "), s.MinLevel)
		return
	}
}

func servesAt(e *Engine, s *policy.Service, dst netip.AddrPort) bool {
	inPorts := false
	for _, pr := range s.Ports {
		inPorts = inPorts || dst.Port() >= pr.Min && dst.Port() <= pr.Max
	}
	for _, host := range s.Agents {
		wa, ok := e.worldAgents[host]
		for i := 0; ok && inPorts && i < len(wa.Addresses); i++ {
			if wa.Addresses[i] == dst.Addr() {
				return true
			}
		}
	}
	return false
}

// cutOrQuarantine reports whether a cut or a quarantine blocks the
// destination whatever the rules say.
func (x *explainer) cutOrQuarantine() bool {
	blocked := false
	for _, peer := range x.table.CutPeers {
		if peer == x.dst.Addr().String() || peer == x.dst.String() {
			x.say("peer %s is cut on %s: open connections were reset and new ones are blocked until restored",
				peer, x.agent)
			blocked = true
		}
	}
	if x.table.Quarantined {
		x.say("%s is quarantined: all traffic but to the server is blocked", x.agent)
		blocked = true
	}
	return blocked
}

func verdictWord(v vigilpb.Verdict) string {
	return strings.ToLower(strings.TrimPrefix(v.String(), "VERDICT_"))
}
