//go:build integration

package reliability

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/vigilsec/vigil/tests/harness"
)

// denyPolicy allows all traffic but TCP to each of denied (HOST:PORT), and
// lowers a device to low for 10 minutes on event loss. extra is appended
// to the rules list (YAML, indented as a list item).
func denyPolicy(t *testing.T, extra string, denied ...string) string {
	t.Helper()
	var rules strings.Builder
	for i, d := range denied {
		host, port, err := net.SplitHostPort(d)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&rules, `  - name: deny-%d
    action: deny
    subjects:
      - devices: ["*"]
    destinations:
      - cidrs: [%s/32]
        ports: ["%s"]
`, i, host, port)
	}
	return `version: 1
levels: [untrusted, low, medium, high]
defaults:
  level: medium
  traffic: allow
  unknown_peers: allow
  fail_mode: last-known
rules:
` + rules.String() + extra + `
protections:
  - name: blind-spot
    when:
      detectors: [event-loss]
    respond:
      set_level: {target: device, level: low, for: 10m}
`
}

// apply writes src to a file and applies it, returning the new version.
func apply(t *testing.T, s *harness.Server, src string) uint64 {
	t.Helper()
	f := filepath.Join(t.TempDir(), "policy.yaml")
	if err := os.WriteFile(f, []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}
	out := strings.TrimSpace(s.Ctl("policy", "apply", "-f", f))
	var v uint64
	if _, err := fmt.Sscanf(out, "policy version %d applied", &v); err != nil {
		t.Fatalf("policy apply printed %q", out)
	}
	return v
}

// event is the part of a stored event the tests look at.
type event struct {
	Seq      uint64 `json:"seq,string"`
	Kind     string `json:"kind"`
	Agent    string `json:"agent"`
	ServerID string `json:"serverId"`
	Lost     uint64 `json:"lost,string"`
	Entity   string `json:"entity"`
	Message  string `json:"message"`
	Process  struct {
		PID         int    `json:"pid"`
		StartTimeNs uint64 `json:"startTimeNs,string"`
		Executable  string `json:"executable"`
		Comm        string `json:"comm"`
		SHA256      string `json:"sha256"`
	} `json:"process"`
	Connection struct {
		RemoteAddress string `json:"remoteAddress"`
		RemotePort    int    `json:"remotePort"`
		Verdict       string `json:"verdict"`
	} `json:"connection"`
	Finding struct {
		Entity   string `json:"entity"`
		Detector string `json:"detector"`
	} `json:"finding"`
	Signal uint32 `json:"signal"`
}

// queryCap is the most events the server returns for one query.
const queryCap = 5000

// events returns the stored events of agent (all agents when empty) of the
// given kinds, oldest first. It fails the test when the answer may have
// been cut at the server's cap, so no count is taken from a partial list.
func events(t *testing.T, s *harness.Server, agent string, kinds ...string) []event {
	t.Helper()
	args := []string{"events", "--limit", fmt.Sprint(queryCap), "-o", "json"}
	if agent != "" {
		args = append(args, "--agent", agent)
	}
	for _, k := range kinds {
		args = append(args, "--kind", k)
	}
	var out []event
	for _, line := range strings.Split(s.Ctl(args...), "\n") {
		if strings.TrimSpace(line) == "" {
			continue
		}
		var ev event
		if err := json.Unmarshal([]byte(line), &ev); err != nil {
			t.Fatalf("decode event %q: %v", line, err)
		}
		out = append(out, ev)
	}
	if len(out) >= queryCap {
		t.Fatalf("event query returned the server's cap of %d: the test made too many events to count", queryCap)
	}
	return out
}

// metric returns the sum of the samples of name whose labels contain
// label, from the Prometheus text the server serves at addr.
func metric(t *testing.T, addr, name, label string) uint64 {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatalf("get metrics: %v", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	var sum uint64
	for _, line := range strings.Split(string(body), "\n") {
		fields := strings.Fields(line)
		if len(fields) != 2 || !strings.HasPrefix(fields[0], name+"{") || !strings.Contains(fields[0], label) {
			continue
		}
		v, err := strconv.ParseFloat(fields[1], 64)
		if err != nil {
			t.Fatalf("metric line %q: %v", line, err)
		}
		sum += uint64(v)
	}
	return sum
}

// connectTally counts pid's stored connect events to target by verdict and
// reports (agent, seq) pairs stored more than once.
func connectTally(evs []event, pid int, target string) (verdicts map[string]int, dups int) {
	host, port, _ := net.SplitHostPort(target)
	verdicts = map[string]int{}
	seen := map[string]bool{}
	for _, ev := range evs {
		key := ev.Agent + "/" + strconv.FormatUint(ev.Seq, 10)
		if ev.Seq != 0 && seen[key] {
			dups++
		}
		seen[key] = true
		if ev.Kind != "EVENT_KIND_CONNECT" || ev.Process.PID != pid ||
			ev.Connection.RemoteAddress != host || strconv.Itoa(ev.Connection.RemotePort) != port {
			continue
		}
		verdicts[strings.TrimPrefix(ev.Connection.Verdict, "VERDICT_")]++
	}
	return verdicts, dups
}

// agentState is the part of an agents list row the tests look at.
type agentState struct {
	Name         string `json:"name"`
	Online       bool   `json:"online"`
	Level        string `json:"level"`
	Revoked      bool   `json:"revoked"`
	EventsLost   uint64 `json:"eventsLost,string"`
	TableVersion uint64 `json:"tableVersion,string"`
}

// agentRow returns the agents list row of name.
func agentRow(t *testing.T, s *harness.Server, name string) (row agentState) {
	t.Helper()
	var all struct {
		Agents []json.RawMessage `json:"agents"`
	}
	out := s.Ctl("agents", "list", "-o", "json")
	if err := json.Unmarshal([]byte(out), &all); err != nil {
		t.Fatalf("decode agents list: %v\n%s", err, out)
	}
	for _, raw := range all.Agents {
		json.Unmarshal(raw, &row)
		if row.Name == name {
			return row
		}
	}
	t.Fatalf("agent %s not listed:\n%s", name, out)
	return row
}
