package policy

import (
	"net/netip"
	"sort"

	vigilpb "github.com/vigilsec/vigil/gen/vigil/v1"
)

// resolveEgress removes duplicates, turns every allow lying inside a deny
// into a deny (splitting its port range where the deny covers only part of
// it) and sorts the result.
func resolveEgress(in []*vigilpb.EgressEntry) []*vigilpb.EgressEntry {
	var allows, denies []*vigilpb.EgressEntry
	for _, e := range in {
		if e.Verdict == vigilpb.Verdict_VERDICT_DENY {
			denies = append(denies, e)
		} else {
			allows = append(allows, e)
		}
	}
	out := append([]*vigilpb.EgressEntry(nil), denies...)
	for _, a := range allows {
		out = append(out, subtractDenies(a, denies)...)
	}
	return sortEgress(out)
}

// subtractDenies returns a, split into the parts no deny covers (kept) and
// the parts a deny covers (turned into denies by that deny's rule).
func subtractDenies(a *vigilpb.EgressEntry, denies []*vigilpb.EgressEntry) []*vigilpb.EgressEntry {
	parts := []*vigilpb.EgressEntry{a}
	var out []*vigilpb.EgressEntry
	for _, d := range denies {
		var rest []*vigilpb.EgressEntry
		for _, part := range parts {
			if !covers(d, part) {
				rest = append(rest, part)
				continue
			}
			lo, hi := max(part.PortMin, d.PortMin), min(part.PortMax, d.PortMax)
			out = append(out, withPorts(part, lo, hi, vigilpb.Verdict_VERDICT_DENY, d.RuleId))
			if part.PortMin < lo {
				rest = append(rest, withPorts(part, part.PortMin, lo-1, part.Verdict, part.RuleId))
			}
			if hi < part.PortMax {
				rest = append(rest, withPorts(part, hi+1, part.PortMax, part.Verdict, part.RuleId))
			}
		}
		parts = rest
	}
	return append(out, parts...)
}

func withPorts(e *vigilpb.EgressEntry, lo, hi uint32, v vigilpb.Verdict,
	id uint32) *vigilpb.EgressEntry {
	return &vigilpb.EgressEntry{RuleId: id, Destination: e.Destination, PortMin: lo, PortMax: hi,
		Protocol: e.Protocol, Subject: cloneSubject(e.Subject), Verdict: v}
}

// covers reports whether deny d applies to every connection of a's
// destination, subject and protocol, on at least one of a's ports.
func covers(d, a *vigilpb.EgressEntry) bool {
	dp, err1 := netip.ParsePrefix(d.Destination)
	ap, err2 := netip.ParsePrefix(a.Destination)
	if err1 != nil || err2 != nil || dp.Bits() > ap.Bits() || !dp.Contains(ap.Addr()) {
		return false
	}
	if d.Protocol != vigilpb.Protocol_PROTOCOL_ANY && d.Protocol != a.Protocol {
		return false
	}
	if d.PortMax < a.PortMin || a.PortMax < d.PortMin {
		return false
	}
	return subjectCovers(d.Subject, a.Subject)
}

func subjectCovers(d, a *vigilpb.Subject) bool {
	if d.Uid != nil && (a.Uid == nil || *a.Uid != *d.Uid) {
		return false
	}
	if d.ExecutablePath != "" && d.ExecutablePath != a.ExecutablePath {
		return false
	}
	return d.ExecutableSha256 == "" || d.ExecutableSha256 == a.ExecutableSha256
}

// sortEgress orders entries by destination and, within one destination,
// by precedence: the narrowest port range first, then the entry selecting
// the most subject fields, then deny before audit before allow. The agent
// takes the first matching entry of the longest matching prefix, so table
// order carries the precedence. Exact duplicates are dropped.
func sortEgress(es []*vigilpb.EgressEntry) []*vigilpb.EgressEntry {
	keys := make(map[*vigilpb.EgressEntry]string, len(es))
	for _, e := range es {
		keys[e] = EgressKey(e)
	}
	sort.SliceStable(es, func(i, j int) bool {
		a, b := es[i], es[j]
		if a.Destination != b.Destination {
			return a.Destination < b.Destination
		}
		if a.PortMax-a.PortMin != b.PortMax-b.PortMin {
			return a.PortMax-a.PortMin < b.PortMax-b.PortMin
		}
		if subjectFields(a.Subject) != subjectFields(b.Subject) {
			return subjectFields(a.Subject) > subjectFields(b.Subject)
		}
		if verdictRank(a.Verdict) != verdictRank(b.Verdict) {
			return verdictRank(a.Verdict) > verdictRank(b.Verdict)
		}
		return keys[a] < keys[b]
	})
	out := es[:0]
	for i, e := range es {
		if i > 0 && keys[e] == keys[es[i-1]] {
			continue
		}
		out = append(out, e)
	}
	return out
}

// Process is what a table lookup knows about the connecting process.
type Process struct {
	Known  bool // false: judged as an unknown process (matches no subject field)
	UID    uint32
	Path   string
	SHA256 string
}

// Lookup judges an outbound connection against a table the way the agent's
// kernel does: among the entries that match, those of the longest prefix
// count, and the first of them in table order decides. It returns the
// deciding entry, or nil when the table's default applies.
func Lookup(t *vigilpb.VerdictTable, proc Process, dst netip.AddrPort,
	proto vigilpb.Protocol) *vigilpb.EgressEntry {
	addr := dst.Addr().Unmap()
	var best *vigilpb.EgressEntry
	bestBits := -1
	for _, e := range t.Egress {
		pfx, err := netip.ParsePrefix(e.Destination)
		if err != nil || !pfx.Contains(addr) || !portIn(e, dst.Port()) || !protoIn(e.Protocol, proto) {
			continue
		}
		if subjectMatches(e.Subject, proc) && pfx.Bits() > bestBits {
			best, bestBits = e, pfx.Bits()
		}
	}
	return best
}

func portIn(e *vigilpb.EgressEntry, port uint16) bool {
	return uint32(port) >= e.PortMin && uint32(port) <= e.PortMax
}

func protoIn(entry, conn vigilpb.Protocol) bool {
	return entry == vigilpb.Protocol_PROTOCOL_ANY || entry == conn
}

func subjectMatches(s *vigilpb.Subject, p Process) bool {
	if s == nil {
		return true
	}
	if s.Uid == nil && s.ExecutablePath == "" && s.ExecutableSha256 == "" {
		return true
	}
	if !p.Known {
		return false
	}
	if s.Uid != nil && *s.Uid != p.UID {
		return false
	}
	if s.ExecutablePath != "" && s.ExecutablePath != p.Path {
		return false
	}
	return s.ExecutableSha256 == "" || s.ExecutableSha256 == p.SHA256
}

func subjectFields(s *vigilpb.Subject) int {
	n := 0
	if s == nil {
		return 0
	}
	if s.Uid != nil {
		n++
	}
	if s.ExecutablePath != "" {
		n++
	}
	if s.ExecutableSha256 != "" {
		n++
	}
	return n
}

func verdictRank(v vigilpb.Verdict) int {
	switch v {
	case vigilpb.Verdict_VERDICT_DENY:
		return 3
	case vigilpb.Verdict_VERDICT_AUDIT:
		return 2
	}
	return 1
}
