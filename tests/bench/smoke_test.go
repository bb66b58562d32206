package bench

import (
	"bytes"
	"fmt"
	"math"
	"os/exec"
	"strconv"
	"strings"
	"testing"

	"github.com/vigilsec/vigil/internal/testenv"
)

func TestJudge(t *testing.T) {
	tests := []struct {
		name   string
		row    Row
		status string
	}{
		{"ratio under max", Row{Ratio: 1.01, Target: &Target{OnRatio: true, Max: true, Bound: 1.02}}, StatusPass},
		{"ratio over max", Row{Ratio: 1.03, Target: &Target{OnRatio: true, Max: true, Bound: 1.02}}, StatusFail},
		{"value under min", Row{Value: 10, Target: &Target{Bound: 200}}, StatusFail},
		{"value at max", Row{Value: 0, Target: &Target{Max: true, Bound: 0}}, StatusPass},
		{"no target", Row{Value: 5}, StatusInfo},
		{"unavailable stays", Row{Status: StatusUnavailable, Target: &Target{Bound: 1}}, StatusUnavailable},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rep := &Report{}
			rep.Add(tt.row)
			if got := rep.Rows[0].Status; got != tt.status {
				t.Errorf("status = %q, want %q", got, tt.status)
			}
			if rep.Failed() != (tt.status == StatusFail) {
				t.Errorf("Failed() = %v with status %q", rep.Failed(), tt.status)
			}
		})
	}
}

func TestRatioRow(t *testing.T) {
	tests := []struct {
		name        string
		base, v     []float64
		value, want float64
	}{
		// Paired by round: the second round ran twice as slow for both, so
		// the ratio is the median of 1.01, 1.01 and 1.03.
		{"paired rounds", []float64{100, 200, 100}, []float64{101, 202, 103}, 103, 1.01},
		{"unpaired medians", []float64{100, 200}, []float64{150, 150, 150}, 150, 1.5},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := samples{"none": tt.base, "vigil": tt.v}
			r := s.ratioRow("x", "vigil", "none", "ns/op", "ns", nil)
			if r.Value != tt.value || math.Abs(r.Ratio-tt.want) > 1e-9 {
				t.Errorf("value %v ratio %v, want %v and %v", r.Value, r.Ratio, tt.value, tt.want)
			}
			if tt.v[0] != s["vigil"][0] {
				t.Errorf("samples reordered")
			}
		})
	}
}

func TestPercentile(t *testing.T) {
	xs := []float64{5, 1, 4, 2, 3, 10, 9, 8, 7, 6}
	for _, tt := range []struct {
		p, want float64
	}{{50, 5}, {99, 10}, {10, 1}, {0, 1}} {
		if got := percentile(xs, tt.p); got != tt.want {
			t.Errorf("p%v = %v, want %v", tt.p, got, tt.want)
		}
	}
	if !math.IsNaN(median(nil)) {
		t.Errorf("median of nothing is not NaN")
	}
}

func TestParseMetrics(t *testing.T) {
	in := `# HELP vigil_server_events_stored_total Events stored, by kind.
# TYPE vigil_server_events_stored_total counter
vigil_server_events_stored_total{kind="EVENT_KIND_EXEC"} 12
vigil_server_events_stored_total{kind="EVENT_KIND_CONNECT"} 30
vigil_agent_kernel_events_lost 1.5e+06
`
	m, err := parseMetrics(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	if m[mStored] != 42 || m[mKernelLost] != 1.5e6 {
		t.Errorf("parsed %v", m)
	}
}

// TestTablesAgree checks that Vigil's table and the nftables set hold the
// same destinations, so both variants do the same lookup.
func TestTablesAgree(t *testing.T) {
	const n = 1000
	nft := nftEgressTable(n)
	vigil := egressTable(n)
	seen := map[string]bool{}
	for _, r := range vigil.Egress {
		elem := fmt.Sprintf("tcp . %s . %d", r.Dest.Addr(), r.PortMin)
		if seen[elem] {
			t.Fatalf("duplicate entry %s", elem)
		}
		seen[elem] = true
		if !strings.Contains(nft, elem) {
			t.Fatalf("nft set lacks %s", elem)
		}
	}
	if got := strings.Count(nft, "tcp . "); got != n {
		t.Errorf("nft set has %d elements, want %d", got, n)
	}
	last := benchDest(99_999)
	if !last.Addr().Is6() || benchDest(99_999-65_536) == last {
		t.Errorf("entries repeat beyond 65536: %v", last)
	}
}

// TestWorkersAndCleanup runs the connect worker in a scenario's cgroup and
// network namespace with a small nftables table, and checks that closing
// the Env removes the namespace and the cgroup.
func TestWorkersAndCleanup(t *testing.T) {
	testenv.RequireRoot(t)
	if _, err := exec.LookPath("nft"); err != nil {
		testenv.SkipOrFail(t, "nft not installed")
	}
	e := newTestEnv(t, "")
	defer e.Close()
	cg, err := e.NewCgroup()
	if err != nil {
		t.Fatal(err)
	}
	ns, err := e.NewNetns("smoke")
	if err != nil {
		t.Fatal(err)
	}
	if err := e.loadNft(ns, nftEgressTable(10)); err != nil {
		t.Fatal(err)
	}
	tcp, udp, err := e.listenIn(ns)
	if err != nil {
		t.Fatal(err)
	}
	for proto, port := range map[string]int{"tcp": tcp, "udp": udp} {
		target := "127.0.0.1:" + strconv.Itoa(port)
		v, err := e.runSample(e.Worker(cg, "connect", proto, ns, target, "200"))
		if err != nil || v.wall <= 0 || v.cpu <= 0 || v.cpu > 2*v.wall {
			t.Errorf("%s worker: %+v ns/op, %v", proto, v, err)
		}
	}

	e.Close()
	out, _ := exec.Command("ip", "netns", "list").CombinedOutput()
	if bytes.Contains(out, []byte(ns)) {
		t.Errorf("netns %s left behind", ns)
	}
	if _, err := exec.Command("test", "-d", cg.Path).CombinedOutput(); err == nil {
		t.Errorf("cgroup %s left behind", cg.Path)
	}
}

func TestRunRefusesUnknownScenario(t *testing.T) {
	called := false
	newEnv := func() (*Env, error) { called = true; return newTestEnv(t, ""), nil }
	if err := Run(newEnv, []string{"conect"}, &Report{}); err == nil || called {
		t.Errorf("unknown scenario: err %v, env created %v", err, called)
	}
}
