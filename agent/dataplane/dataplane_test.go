package dataplane

import (
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	"github.com/vigilsec/vigil/internal/testenv"
)

// openScoped opens a data plane scoped to a fresh cgroup with a unique pin
// path, and removes both when the test ends.
func openScoped(t *testing.T, cfg Config) (*Dataplane, *testenv.Cgroup) {
	t.Helper()
	cg := testenv.NewCgroup(t)
	cfg.CgroupPath = cg.Path
	if cfg.PinPath == "" {
		cfg.PinPath = filepath.Join(DefaultPinRoot, "test-"+filepath.Base(cg.Path))
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	d, err := Open(cfg)
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	t.Cleanup(func() {
		d.Close()
		if err := Cleanup(cfg.PinPath); err != nil {
			t.Errorf("cleanup: %v", err)
		}
		if _, err := os.Stat(cfg.PinPath); !os.IsNotExist(err) {
			t.Errorf("pin path %s left behind", cfg.PinPath)
		}
	})
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
