package decide

import (
	"context"
	"net/netip"
	"sort"
	"sync"
	"testing"

	"google.golang.org/protobuf/proto"

	vigilpb "github.com/vigilsec/vigil/gen/vigil/v1"
	"github.com/vigilsec/vigil/policy"
)

// applyDiff is what an agent does with a diff.
func applyDiff(t *vigilpb.VerdictTable, d *vigilpb.TableDiff) *vigilpb.VerdictTable {
	out := proto.Clone(t).(*vigilpb.VerdictTable)
	out.Version, out.PolicyVersion = d.Version, d.PolicyVersion
	out.Quarantined, out.FailMode = d.Quarantined, d.FailMode
	if d.DefaultEgress != vigilpb.Verdict_VERDICT_UNSPECIFIED {
		out.DefaultEgress = d.DefaultEgress
	}
	if d.SetProtectedPorts {
		out.ProtectedPorts = d.ProtectedPorts
	}
	out.Egress = patch(out.Egress, d.EgressAdded, d.EgressRemoved, policy.EgressKey)
	out.Ingress = patch(out.Ingress, d.IngressAdded, d.IngressRemoved, policy.IngressKey)
	id := func(s string) string { return s }
	out.KillOnExec = patch(out.KillOnExec, d.KillOnExecAdded, d.KillOnExecRemoved, id)
	out.CutPeers = patch(out.CutPeers, d.CutPeersAdded, d.CutPeersRemoved, id)
	sort.Strings(out.KillOnExec)
	sort.Strings(out.CutPeers)
	return out
}

// patch removes and then appends, as the agent does.
func patch[E any](have, added, removed []E, key func(E) string) []E {
	gone := map[string]bool{}
	for _, e := range removed {
		gone[key(e)] = true
	}
	var out []E
	for _, e := range have {
		if !gone[key(e)] {
			out = append(out, e)
		}
	}
	return append(out, added...)
}

// samePrecedence reports whether two tables hold the same entries in the
// same order within every prefix, which is all the kernel's judgement
// depends on.
func samePrecedence(a, b *vigilpb.VerdictTable) bool {
	a, b = proto.Clone(a).(*vigilpb.VerdictTable), proto.Clone(b).(*vigilpb.VerdictTable)
	for _, t := range []*vigilpb.VerdictTable{a, b} {
		sort.SliceStable(t.Egress, func(i, j int) bool { return t.Egress[i].Destination < t.Egress[j].Destination })
		sort.SliceStable(t.Ingress, func(i, j int) bool { return t.Ingress[i].Peer < t.Ingress[j].Peer })
	}
	return proto.Equal(a, b)
}

// TestDiffsReplayToTables follows every diff the scenario pushes and checks
// that an agent applying them holds exactly the engine's table.
func TestDiffsReplayToTables(t *testing.T) {
	f := newFixture(t)
	held := map[string]*vigilpb.VerdictTable{"laptop": proto.Clone(f.table("laptop")).(*vigilpb.VerdictTable),
		"crm-host": proto.Clone(f.table("crm-host")).(*vigilpb.VerdictTable)}
	seen := map[string]int{"laptop": len(f.sink.diffs["laptop"]), "crm-host": len(f.sink.diffs["crm-host"])}
	steps := []struct {
		name string
		run  func()
	}{
		{"threat-intel hit", func() { f.execBad(4242) }},
		{"admin cut", func() { f.e.Cut(context.Background(), "crm-host", "10.1.0.77") }},
		{"report high", func() {
			f.e.Report(context.Background(), &vigilpb.ReportRequest{Entity: "device/laptop", Level: "high", Source: "edr"})
		}},
		{"admin restore", func() { f.e.Restore(context.Background(), "crm-host", "10.1.0.77") }},
	}
	for _, st := range steps {
		st.run()
		for agent := range held {
			for _, d := range f.sink.diffs[agent][seen[agent]:] {
				if d.BaseVersion != held[agent].Version || d.Version != d.BaseVersion+1 {
					t.Fatalf("%s: %s diff %d->%d on table %d", st.name, agent, d.BaseVersion, d.Version, held[agent].Version)
				}
				held[agent] = applyDiff(held[agent], d)
			}
			seen[agent] = len(f.sink.diffs[agent])
			if !samePrecedence(held[agent], f.table(agent)) {
				t.Fatalf("%s: %s replayed table differs:\n%s\nvs engine\n%s", st.name, agent,
					policy.FormatTable(held[agent]), policy.FormatTable(f.table(agent)))
			}
		}
	}
}

// TestConcurrentCalls drives the engine from several goroutines; run with
// -race it proves the locking.
func TestConcurrentCalls(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	var wg sync.WaitGroup
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 50; i++ {
				f.e.Report(ctx, &vigilpb.ReportRequest{Entity: "device/laptop", Level: []string{"low", "high"}[i%2], Source: "x"})
				f.e.Explain(&vigilpb.ExplainRequest{Agent: "laptop", Destination: "10.2.0.1:8080"})
				f.e.Entities("")
				f.e.Tick()
			}
		}()
	}
	wg.Wait()
	if l := f.e.Level("device/laptop"); l != "low" && l != "high" {
		t.Fatalf("level %s", l)
	}
}

func TestDiffKeepsPrecedenceWithinPrefix(t *testing.T) {
	uid := uint32(1000)
	deny := &vigilpb.EgressEntry{Destination: "10.0.0.1/32", PortMin: 80, PortMax: 80,
		Protocol: vigilpb.Protocol_PROTOCOL_TCP, Subject: &vigilpb.Subject{}, Verdict: vigilpb.Verdict_VERDICT_DENY}
	allow := proto.Clone(deny).(*vigilpb.EgressEntry)
	allow.Subject.Uid, allow.Verdict, allow.RuleId = &uid, vigilpb.Verdict_VERDICT_ALLOW, 7
	other := &vigilpb.EgressEntry{Destination: "10.0.0.2/32", PortMin: 1, PortMax: 1,
		Protocol: vigilpb.Protocol_PROTOCOL_TCP, Subject: &vigilpb.Subject{}, Verdict: vigilpb.Verdict_VERDICT_DENY}
	prev := &vigilpb.VerdictTable{Version: 1, Egress: []*vigilpb.EgressEntry{deny, other}}
	next := &vigilpb.VerdictTable{Version: 2, Egress: []*vigilpb.EgressEntry{allow, deny, other}}

	d := Diff(prev, next)
	equal(t, "removed", len(d.EgressRemoved), 1)
	equal(t, "added", len(d.EgressAdded), 2)
	held := applyDiff(prev, d)
	e := policy.Lookup(held, policy.Process{Known: true, UID: 1000}, netip.MustParseAddrPort("10.0.0.1:80"),
		vigilpb.Protocol_PROTOCOL_TCP)
	if e == nil || e.Verdict != vigilpb.Verdict_VERDICT_ALLOW {
		t.Fatalf("after the diff uid 1000 gets %v, want the allow", e)
	}
}
