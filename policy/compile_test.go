package policy

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	vigilpb "github.com/vigilsec/vigil/gen/vigil/v1"
)

func loadPolicy(t testing.TB, path string) *Policy {
	t.Helper()
	src, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	p, errs := Parse(path, src)
	if len(errs) > 0 {
		t.Fatalf("parse %s: %v", path, errs)
	}
	return p
}

func addrs(s ...string) []netip.Addr {
	var out []netip.Addr
	for _, a := range s {
		out = append(out, netip.MustParseAddr(a))
	}
	return out
}

func scenarioWorld() *World {
	return &World{
		Now:           time.Date(2026, 12, 4, 12, 0, 0, 0, time.UTC),
		PolicyVersion: 3,
		Agents: map[string]*Agent{
			"laptop":   {Name: "laptop", Addresses: addrs("10.1.0.2", "fd00::2"), Users: map[string]uint32{"alice": 1000}},
			"crm-host": {Name: "crm-host", Addresses: addrs("10.1.0.1")},
			"phone":    {Name: "phone", Addresses: addrs("10.1.0.3")},
		},
		Levels: map[string]string{"device/phone": "low", "user/alice": "high"},
		Cuts:   map[string][]string{"phone": {"10.1.0.1:8080", "10.1.0.1"}},
	}
}

func TestCompileGolden(t *testing.T) {
	p := loadPolicy(t, "testdata/compile/scenario.yaml")
	tests := []struct {
		name   string
		change func(w *World)
	}{
		{"baseline", func(w *World) {}},
		{"laptop-low", func(w *World) { w.Levels["device/laptop"] = "low" }},
		{"laptop-high", func(w *World) { w.Levels["device/laptop"] = "high" }},
		{"laptop-denied", func(w *World) { w.Denied = map[string]bool{"device/laptop": true} }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := scenarioWorld()
			tt.change(w)
			tables := Compile(p, w)
			var b strings.Builder
			for _, name := range sortedKeys(tables) {
				b.WriteString("== " + name + "\n" + FormatTable(tables[name]))
			}
			golden(t, "compile/"+tt.name+".golden", b.String())
		})
	}
}

func TestCompileDeterministic(t *testing.T) {
	for _, path := range []string{"testdata/compile/scenario.yaml", "../examples/policy.yaml"} {
		t.Run(path, func(t *testing.T) {
			p := loadPolicy(t, path)
			first := Compile(p, scenarioWorld())
			for i := 0; i < 20; i++ {
				again := Compile(p, scenarioWorld())
				for name, tab := range first {
					if !proto.Equal(tab, again[name]) {
						t.Fatalf("run %d: table %s differs:\n%s\nvs\n%s", i, name,
							FormatTable(tab), FormatTable(again[name]))
					}
				}
			}
		})
	}
}

func TestLookup(t *testing.T) {
	p := loadPolicy(t, "testdata/compile/scenario.yaml")
	w := scenarioWorld()
	w.Levels["device/laptop"] = "high"
	laptop := CompileAgent(p, w, "laptop")
	curl := Process{Known: true, UID: 1000, Path: "/usr/bin/curl"}
	tests := []struct {
		name     string
		table    *vigilpb.VerdictTable
		proc     Process
		dst      string
		proto    vigilpb.Protocol
		wantRule string // "" for the default
		want     vigilpb.Verdict
	}{
		{"crm allowed", laptop, Process{}, "10.1.0.1:8080", vigilpb.Protocol_PROTOCOL_TCP, "devices-to-crm", vigilpb.Verdict_VERDICT_ALLOW},
		{"crm via mapped v6", laptop, Process{}, "[::ffff:10.1.0.1]:8080", vigilpb.Protocol_PROTOCOL_TCP, "devices-to-crm", vigilpb.Verdict_VERDICT_ALLOW},
		{"crm udp is default", laptop, Process{}, "10.1.0.1:8080", vigilpb.Protocol_PROTOCOL_UDP, "", vigilpb.Verdict_VERDICT_ALLOW},
		{"admin for alice's curl", laptop, curl, "10.1.0.1:9001", vigilpb.Protocol_PROTOCOL_TCP, "ops-admin", vigilpb.Verdict_VERDICT_ALLOW},
		{"deny beats allow inside range", laptop, curl, "10.1.0.1:9005", vigilpb.Protocol_PROTOCOL_TCP, "block-9005", vigilpb.Verdict_VERDICT_DENY},
		{"admin closed for unknown process", laptop, Process{}, "10.1.0.1:9001", vigilpb.Protocol_PROTOCOL_TCP, "no-rule", vigilpb.Verdict_VERDICT_DENY},
		{"admin closed for bob's curl", laptop, Process{Known: true, UID: 1001, Path: "/usr/bin/curl"}, "10.1.0.1:9001", vigilpb.Protocol_PROTOCOL_TCP, "no-rule", vigilpb.Verdict_VERDICT_DENY},
		{"phone too low for crm", CompileAgent(p, w, "phone"), Process{}, "10.1.0.1:8080", vigilpb.Protocol_PROTOCOL_TCP, "devices-to-crm", vigilpb.Verdict_VERDICT_DENY},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := Lookup(tt.table, tt.proc, netip.MustParseAddrPort(tt.dst), tt.proto)
			rule, verdict := "", tt.table.DefaultEgress
			if e != nil {
				rule, verdict = "no-rule", e.Verdict
				if r, ok := p.RuleByID(e.RuleId); ok {
					rule = r.Name
				}
			}
			if rule != tt.wantRule || verdict != tt.want {
				t.Errorf("got rule %q verdict %s, want %q %s", rule, verdict, tt.wantRule, tt.want)
			}
		})
	}
}

// TestCompileDeterministicRandomWorlds is a property test: for random
// worlds, compiling twice gives identical tables, whatever the map order.
func TestCompileDeterministicRandomWorlds(t *testing.T) {
	p := loadPolicy(t, "testdata/compile/scenario.yaml")
	rng := rand.New(rand.NewPCG(1, 2))
	for round := 0; round < 50; round++ {
		w := randomWorld(rng)
		first, second := Compile(p, w), Compile(p, w)
		for name, tab := range first {
			if !proto.Equal(tab, second[name]) {
				t.Fatalf("round %d: table %s differs between two compiles", round, name)
			}
		}
	}
}

func randomWorld(rng *rand.Rand) *World {
	levels := []string{"untrusted", "low", "medium", "high"}
	w := scenarioWorld()
	for i := 0; i < 2+rng.IntN(30); i++ {
		name := fmt.Sprintf("dev-%d", i)
		w.Agents[name] = &Agent{Name: name, Addresses: addrs(fmt.Sprintf("10.3.%d.%d", i, 1+rng.IntN(200))),
			Users: map[string]uint32{"alice": uint32(1000 + rng.IntN(3))}}
		w.Levels["device/"+name] = levels[rng.IntN(len(levels))]
		if rng.IntN(4) == 0 {
			w.Cuts[name] = []string{"10.1.0.1:8080", "10.1.0.1"}
		}
	}
	w.Levels["device/laptop"] = levels[rng.IntN(len(levels))]
	return w
}
