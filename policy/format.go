package policy

import (
	"fmt"
	"strings"

	vigilpb "github.com/vigilsec/vigil/gen/vigil/v1"
)

// FormatTable renders a table as stable, line-oriented text, one entry a
// line, for operators and golden tests.
func FormatTable(t *vigilpb.VerdictTable) string {
	var b strings.Builder
	fmt.Fprintf(&b, "version %d policy %d default %s fail %s quarantined %v\n",
		t.Version, t.PolicyVersion, verdictName(t.DefaultEgress), failName(t.FailMode), t.Quarantined)
	for _, e := range t.Egress {
		fmt.Fprintf(&b, "egress %s %s %s %s subject{%s} rule %d\n", verdictName(e.Verdict),
			e.Destination, ports(e.PortMin, e.PortMax), protoName(e.Protocol), subjectText(e.Subject), e.RuleId)
	}
	for _, p := range t.ProtectedPorts {
		fmt.Fprintf(&b, "protect %s %s default %s\n", ports(p.PortMin, p.PortMax),
			protoName(p.Protocol), verdictName(p.DefaultVerdict))
	}
	for _, e := range t.Ingress {
		fmt.Fprintf(&b, "ingress %s %s %s %s rule %d\n", verdictName(e.Verdict), e.Peer,
			ports(e.PortMin, e.PortMax), protoName(e.Protocol), e.RuleId)
	}
	for _, h := range t.KillOnExec {
		fmt.Fprintf(&b, "kill-on-exec %s\n", h)
	}
	for _, p := range t.CutPeers {
		fmt.Fprintf(&b, "cut %s\n", p)
	}
	return b.String()
}

func ports(lo, hi uint32) string {
	if lo == hi {
		return fmt.Sprint(lo)
	}
	return fmt.Sprintf("%d-%d", lo, hi)
}

func subjectText(s *vigilpb.Subject) string {
	var parts []string
	if s == nil {
		return ""
	}
	if s.Uid != nil {
		parts = append(parts, fmt.Sprintf("uid=%d", *s.Uid))
	}
	if s.ExecutablePath != "" {
		parts = append(parts, "exe="+s.ExecutablePath)
	}
	if s.ExecutableSha256 != "" {
		parts = append(parts, "sha256="+s.ExecutableSha256)
	}
	return strings.Join(parts, " ")
}

func verdictName(v vigilpb.Verdict) string {
	return strings.ToLower(strings.TrimPrefix(v.String(), "VERDICT_"))
}

func protoName(p vigilpb.Protocol) string {
	return strings.ToLower(strings.TrimPrefix(p.String(), "PROTOCOL_"))
}

func failName(f vigilpb.FailMode) string {
	return strings.ToLower(strings.TrimPrefix(f.String(), "FAIL_MODE_"))
}
