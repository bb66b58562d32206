package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestPolicyValidateOffline(t *testing.T) {
	example, err := filepath.Abs("../../examples/policy.yaml")
	if err != nil {
		t.Fatal(err)
	}
	bad := filepath.Join(t.TempDir(), "bad.yaml")
	src := "version: 1\nlevels: [low, high]\ndefaults:\n  level: low\n  traffic: deny\n" +
		"  unknown_peers: deny\n  colour: blue\n"
	if err := os.WriteFile(bad, []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}
	// No server, no credentials: validation must not need either.
	t.Chdir(t.TempDir())
	t.Setenv("VIGIL_CREDENTIALS", "")
	offline := []string{"--server", closedAddr(t)}

	tests := []struct {
		name   string
		file   string
		code   int
		stdout string
		stderr string
	}{
		{name: "example is valid", file: example, code: exitOK, stdout: example + ": valid\n"},
		{name: "unknown field", file: bad, code: exitRejected,
			stderr: bad + ":7:3: defaults.colour: unknown field\nvigilctl: " + bad + ": 1 error(s)\n"},
		{name: "missing file", file: bad + ".gone", code: exitOther, stderr: "vigilctl: read policy: open " + bad + ".gone"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := runCtl(t, append(offline, "policy", "validate", "-f", tt.file)...)
			if r.code != tt.code {
				t.Fatalf("want exit %d, got %s", tt.code, r)
			}
			if r.stdout != tt.stdout || !strings.HasPrefix(r.stderr, tt.stderr) {
				t.Errorf("got %s\nwant stdout %q, stderr prefix %q", r, tt.stdout, tt.stderr)
			}
		})
	}
}
