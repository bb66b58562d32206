package api

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	vigilpb "github.com/vigilsec/vigil/gen/vigil/v1"
	"github.com/vigilsec/vigil/server/pki"
)

// helperEnv names the data directory when the test binary runs as a server
// helper process, which the crash test kills with SIGKILL.
const helperEnv = "VIGIL_API_TEST_SERVER_DIR"

// runHelper serves until killed when the binary runs as a helper; it
// reports false otherwise.
func runHelper() bool {
	dir := os.Getenv(helperEnv)
	if dir == "" {
		return false
	}
	ts, err := startServer(dir, "127.0.0.1:0")
	if err != nil {
		os.Stderr.WriteString(err.Error() + "\n")
		os.Exit(2)
	}
	tmp := filepath.Join(dir, "addr.tmp")
	if err := os.WriteFile(tmp, []byte(ts.addr), 0o600); err != nil {
		os.Exit(2)
	}
	os.Rename(tmp, filepath.Join(dir, "addr"))
	select {}
}

// startHelper runs a server helper process on dir and returns its address.
func startHelper(t *testing.T, dir string) (*exec.Cmd, string) {
	t.Helper()
	os.Remove(filepath.Join(dir, "addr"))
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"="+dir)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if addr, err := os.ReadFile(filepath.Join(dir, "addr")); err == nil {
			return cmd, string(addr)
		}
	}
	t.Fatal("helper server did not start within 10s")
	return nil, ""
}

func TestKillNineLosesNothingAcknowledged(t *testing.T) {
	dir := t.TempDir()
	cmd, addr := startHelper(t, dir)
	ca, err := pki.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	ts := &testServer{addr: addr, ca: ca}
	cert := ts.enroll(t, "laptop")
	a := ts.connect(t, cert, "laptop")
	a.next(t)
	a.send(t, batch(1, 2, 3, 4, 5))
	if got := a.next(t).GetEventsAck().GetSeq(); got != 5 {
		t.Fatalf("ack %d, want 5", got)
	}

	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()
	a.end(t)

	_, ts.addr = startHelper(t, dir)
	resp, err := ts.admin(t, pki.RoleViewer).QueryEvents(context.Background(), &vigilpb.QueryEventsRequest{Agent: "laptop"})
	if err != nil || len(resp.Events) != 5 {
		t.Fatalf("events after kill -9: %d err %v, want 5", len(resp.GetEvents()), err)
	}
	a = ts.connect(t, cert, "laptop")
	a.next(t)
	a.send(t, batch(5, 6))
	if got := a.next(t).GetEventsAck().GetSeq(); got != 6 {
		t.Fatalf("ack after kill -9 %d, want 6", got)
	}
}
