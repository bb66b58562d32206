package dataplane

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
)

func TestCompileRejectsBadTables(t *testing.T) {
	tooMany := make([]EgressRule, maxRulesPerPrefix+1)
	for i := range tooMany {
		tooMany[i] = portRule(uint32(i+1), "10.0.0.0/8", 80, ProtoTCP, VerdictDeny)
	}
	tests := []struct {
		name    string
		table   Table
		wantErr string
		wantIs  error
	}{
		{"invalid prefix", Table{Egress: []EgressRule{{RuleID: 3, Proto: ProtoTCP, Verdict: VerdictDeny}}},
			"egress rule 3: invalid prefix", nil},
		{"empty port range", Table{Egress: []EgressRule{{RuleID: 4, Dest: prefix("10.0.0.0/8"), PortMin: 9,
			PortMax: 8, Proto: ProtoTCP, Verdict: VerdictDeny}}}, "egress rule 4: port range 9-8 is empty", nil},
		{"unset protocol", Table{Egress: []EgressRule{{RuleID: 5, Dest: prefix("10.0.0.0/8"), Verdict: VerdictDeny}}},
			"egress rule 5: invalid protocol 0", nil},
		{"unset verdict", Table{Ingress: []IngressRule{{RuleID: 6, Peer: prefix("10.0.0.0/8"), Proto: ProtoTCP}}},
			"ingress rule 6: invalid verdict 0", nil},
		{"too many rules on one prefix", Table{Egress: tooMany}, "egress rule 1: 33 rules apply to one prefix",
			ErrTableTooLarge},
		{"too many exempt prefixes", Table{QuarantineExempt: make([]netip.Prefix, 9)}, "quarantine exempt",
			ErrTableTooLarge},
		{"bad default verdict", Table{DefaultEgress: 7}, "default egress: invalid verdict 7", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := compileTable(tt.table)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("error %v, want it to contain %q", err, tt.wantErr)
			}
			if tt.wantIs != nil && !errors.Is(err, tt.wantIs) {
				t.Errorf("error %v is not %v", err, tt.wantIs)
			}
		})
	}
}

func TestSpansIncludeCoveringPrefixes(t *testing.T) {
	rules := []EgressRule{
		portRule(1, "10.0.0.0/8", 80, ProtoTCP, VerdictAllow),
		portRule(2, "10.1.0.0/16", 81, ProtoTCP, VerdictDeny),
		portRule(3, "10.1.2.3/32", 82, ProtoTCP, VerdictAudit),
		portRule(4, "10.1.2.3/32", 83, ProtoUDP, VerdictDeny),
		portRule(5, "2001:db8::/32", 84, ProtoTCP, VerdictDeny),
	}
	st, err := compileEgress(rules)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string][]uint32{
		"10.0.0.0/8":    {1},
		"10.1.0.0/16":   {2, 1},
		"10.1.2.3/32":   {3, 4, 2, 1},
		"2001:db8::/32": {5},
	}
	for i, key := range st.keys {
		addr := netip.AddrFrom16(key.Addr)
		bits := int(key.Prefixlen)
		if addr.Is4In6() {
			addr, bits = addr.Unmap(), bits-96
		}
		name := netip.PrefixFrom(addr, bits).String()
		span := st.spans[i]
		var got []uint32
		for _, r := range st.rules[span.First : span.First+span.Count] {
			got = append(got, r.RuleId)
		}
		if !equalIDs(got, want[name]) {
			t.Errorf("prefix %s: rules %v, want %v", name, got, want[name])
		}
	}
}

func equalIDs(a, b []uint32) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestPinPathFor(t *testing.T) {
	tests := []struct{ name, cgroup, want string }{
		{"root", "/sys/fs/cgroup/unified", "/sys/fs/bpf/vigil/root"},
		{"nested", "/sys/fs/cgroup/unified/a/b", "/sys/fs/bpf/vigil/scope-a%2Fb"},
		{"underscore kept apart from nesting", "/sys/fs/cgroup/unified/a_b", "/sys/fs/bpf/vigil/scope-a_b"},
		{"a cgroup named root", "/sys/fs/cgroup/unified/root", "/sys/fs/bpf/vigil/scope-root"},
		{"trailing slash", "/sys/fs/cgroup/unified/svc/", "/sys/fs/bpf/vigil/scope-svc"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := PinPathFor(tt.cgroup); got != tt.want {
				t.Errorf("PinPathFor(%q) = %q, want %q", tt.cgroup, got, tt.want)
			}
		})
	}
}
