package dataplane

import (
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/vigilsec/vigil/internal/testenv"
)

// openScoped opens a data plane scoped to a fresh cgroup with a unique pin
// path, and removes both when the test ends.
func openScoped(t *testing.T, cfg Config) (*Dataplane, *testenv.Cgroup) {
	t.Helper()
	cg := newScopeCgroup(t)
	cfg.CgroupPath = cg.Path
	if cfg.PinPath == "" {
		cfg.PinPath = testPinPath(cg.Path)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	t.Cleanup(func() {
		if err := Cleanup(cfg.PinPath); err != nil {
			t.Errorf("cleanup: %v", err)
		}
		if _, err := os.Stat(cfg.PinPath); !os.IsNotExist(err) {
			t.Errorf("pin path %s left behind", cfg.PinPath)
		}
	})
	d, err := Open(cfg)
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	t.Cleanup(func() { d.Close() })
	return d, cg
}

func TestOpenReportsCapabilities(t *testing.T) {
	d, _ := openScoped(t, Config{})
	caps := d.Capabilities()
	for _, h := range hooks {
		if !caps.Hooks[h.name] {
			t.Errorf("hook %s did not load", h.name)
		}
	}
	if caps.ExecEnforcement != "kill-on-exec" {
		t.Errorf("exec enforcement = %q, want kill-on-exec", caps.ExecEnforcement)
	}
}

// newScopeCgroup creates a test cgroup and, when the test ends, checks that
// no program is left attached to it.
func newScopeCgroup(t *testing.T) *testenv.Cgroup {
	t.Helper()
	cg := testenv.NewCgroup(t)
	t.Cleanup(func() {
		// Links are released asynchronously after their last reference.
		var out []byte
		for range 100 {
			var err error
			out, err = exec.Command("bpftool", "cgroup", "show", cg.Path).CombinedOutput()
			if err != nil || !strings.Contains(string(out), "vigil_") {
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
		t.Errorf("programs left attached to %s:\n%s", cg.Path, out)
	})
	return cg
}
