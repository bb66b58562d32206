package harness

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"

	vigilpb "github.com/vigilsec/vigil/gen/vigil/v1"
	"github.com/vigilsec/vigil/internal/testenv"
)

// Role is something a test binary does when started as a workload instead
// of running tests.
type Role func(args []string) error

// Environment variables that turn a test binary into a workload.
const (
	roleEnv = "VIGIL_TEST_ROLE"
	argsEnv = "VIGIL_TEST_ARGS"
)

// RunRole plays the role the environment names, if any, and exits; a test
// package calls it from init with the roles it offers. Started inside a test
// cgroup, the test binary is how scenarios put a client, a server or a
// flood under an agent's enforcement.
func RunRole(roles map[string]Role) {
	name := os.Getenv(roleEnv)
	if name == "" {
		return
	}
	role, ok := roles[name]
	err := fmt.Errorf("unknown role %q", name)
	if ok {
		err = role(strings.Fields(os.Getenv(argsEnv)))
	}
	if err != nil {
		fmt.Println("error:", err)
		os.Exit(1)
	}
	os.Exit(0)
}

// Workload returns a command that starts the test binary in role inside cg
// and, when netns is set, inside that network namespace.
func Workload(t *testing.T, cg *testenv.Cgroup, netns, role string, args ...string) *exec.Cmd {
	t.Helper()
	var cmd *exec.Cmd
	if netns == "" {
		cmd = cg.Command(t, os.Args[0], "-test.run=^$")
	} else {
		cmd = cg.Command(t, "nsenter", "--net=/run/netns/"+netns, "--", os.Args[0], "-test.run=^$")
	}
	cmd.Env = RoleEnv(role, args...)
	return cmd
}

// RoleEnv is this process's environment plus what makes a test binary play
// role with args, for commands Workload does not build.
func RoleEnv(role string, args ...string) []string {
	return append(os.Environ(), roleEnv+"="+role, argsEnv+"="+strings.Join(args, " "))
}

// UniqueBinary copies the executable src into a fresh directory and appends
// random bytes, which the loader ignores, so the copy runs like src but has
// a hash nothing else has. It returns the copy's path and lowercase hex
// SHA-256.
func UniqueBinary(t *testing.T, src string) (path, sum string) {
	t.Helper()
	data, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	data = append(data, []byte(rand.Text())...)
	path = filepath.Join(t.TempDir(), "evil-"+filepath.Base(src))
	if err := os.WriteFile(path, data, 0o755); err != nil {
		t.Fatal(err)
	}
	h := sha256.Sum256(data)
	return path, hex.EncodeToString(h[:])
}

// KilledBySIGKILL reports whether err is the exit of a process SIGKILL ended.
func KilledBySIGKILL(err error) bool {
	var exit *exec.ExitError
	if !errors.As(err, &exit) {
		return false
	}
	ws, ok := exit.Sys().(syscall.WaitStatus)
	return ok && ws.Signaled() && ws.Signal() == syscall.SIGKILL
}

// EntityLevel returns an entity's level from `vigilctl entities list`, or
// "" when the server does not list it.
func (s *Server) EntityLevel(name string) string {
	s.T.Helper()
	var resp vigilpb.ListEntitiesResponse
	out := s.Ctl("entities", "list", "-o", "json")
	if err := protojson.Unmarshal([]byte(out), &resp); err != nil {
		s.T.Fatalf("decode entities list: %v\n%s", err, out)
	}
	for _, e := range resp.GetEntities() {
		if e.GetName() == name {
			return e.GetLevel()
		}
	}
	return ""
}
