//go:build integration

package integrate

import (
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"

	vigilpb "github.com/vigilsec/vigil/gen/vigil/v1"
	"github.com/vigilsec/vigil/internal/testenv"
	"github.com/vigilsec/vigil/tests/harness"
)

// The test binary doubles as a workload: in role "dial" it connects to
// HOST:PORT once, sends a byte and exits.
func init() {
	harness.RunRole(map[string]harness.Role{"dial": func(args []string) error {
		c, err := net.DialTimeout("tcp", args[0], 2*time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		_, err = c.Write([]byte{1})
		return err
	}})
}

// dialFrom runs one TCP connect to addr inside cg and returns the pid of
// the process that made it.
func dialFrom(t *testing.T, cg *testenv.Cgroup, addr string) int {
	t.Helper()
	cmd := harness.Workload(t, cg, "", "dial", addr)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("dial %s from the test cgroup: %v\n%s", addr, err, out)
	}
	return cmd.Process.Pid
}

// testPolicy allows all traffic and kills, at once and at every later exec,
// a process whose executable threat intelligence names.
const testPolicy = `version: 1
levels: [untrusted, low, medium, high]
defaults:
  level: medium
  traffic: allow
  unknown_peers: allow
protections:
  - name: threat-intel-hit
    when:
      detectors: [threat-intel]
      entity: process
    respond:
      kill: true
      kill_on_exec: true
`

// applyPolicy applies testPolicy on srv.
func applyPolicy(t *testing.T, srv *harness.Server) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "policy.yaml")
	writeFile(t, path, testPolicy, 0o600)
	srv.Ctl("policy", "apply", "-f", path)
}

func writeFile(t *testing.T, path, content string, perm os.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), perm); err != nil {
		t.Fatal(err)
	}
}

// storedEvents returns the server's stored events of the given kinds
// through vigilctl events -o json.
func storedEvents(t *testing.T, srv *harness.Server, kinds ...string) []*vigilpb.Event {
	t.Helper()
	args := []string{"events", "-o", "json", "--limit", "10000"}
	for _, k := range kinds {
		args = append(args, "--kind", k)
	}
	var out []*vigilpb.Event
	for _, line := range strings.Split(strings.TrimSpace(srv.Ctl(args...)), "\n") {
		if line == "" {
			continue
		}
		ev := &vigilpb.Event{}
		if err := protojson.Unmarshal([]byte(line), ev); err != nil {
			t.Fatalf("vigilctl events line %q: %v", line, err)
		}
		out = append(out, ev)
	}
	return out
}

// ocsfRecord holds the OCSF fields the tests check.
type ocsfRecord struct {
	ClassUID    int   `json:"class_uid"`
	CategoryUID int   `json:"category_uid"`
	ActivityID  int   `json:"activity_id"`
	TypeUID     int   `json:"type_uid"`
	Time        int64 `json:"time"`
	Metadata    struct {
		Version string `json:"version"`
		Product struct {
			Name string `json:"name"`
		} `json:"product"`
	} `json:"metadata"`
	Device *struct {
		Name string `json:"name"`
	} `json:"device"`
	Process *struct {
		PID  int `json:"pid"`
		File *struct {
			Path string `json:"path"`
		} `json:"file"`
	} `json:"process"`
	Actor *struct {
		Process *struct {
			PID int `json:"pid"`
		} `json:"process"`
	} `json:"actor"`
	DstEndpoint *struct {
		IP   string `json:"ip"`
		Port int    `json:"port"`
	} `json:"dst_endpoint"`
	ConnectionInfo *struct {
		ProtocolName string `json:"protocol_name"`
	} `json:"connection_info"`
	Unmapped map[string]any `json:"unmapped"`
}

// decodeRecord parses one OCSF JSON record.
func decodeRecord(t *testing.T, data []byte) ocsfRecord {
	t.Helper()
	var rec ocsfRecord
	if err := json.Unmarshal(data, &rec); err != nil {
		t.Fatalf("OCSF record %q: %v", data, err)
	}
	return rec
}
