// Package fence checks the architecture's import fences and the source tree's
// conventions: the agent never links the server's store or decision engine,
// the server never links the eBPF library, and every package documents what
// it is for exactly once.
package fence

import (
	"go/parser"
	"go/token"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

const module = "github.com/vigilsec/vigil"

func repoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

// deps lists every package pkg links, as `go list -deps` sees it.
func deps(t *testing.T, pkg string) []string {
	t.Helper()
	cmd := exec.Command("go", "list", "-deps", pkg)
	cmd.Dir = repoRoot()
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list -deps %s: %v", pkg, err)
	}
	return strings.Fields(string(out))
}

func TestImportFences(t *testing.T) {
	tests := []struct {
		name      string
		pkg       string
		forbidden []string
	}{
		{"agent links no server store or engine", "./cmd/vigil-agent", []string{
			"github.com/dgraph-io/badger", module + "/server/", module + "/policy",
		}},
		{"server links no ebpf", "./cmd/vigil-server", []string{
			"github.com/cilium/ebpf", module + "/agent/",
		}},
		{"vigilctl links neither side's internals", "./cmd/vigilctl", []string{
			"github.com/cilium/ebpf", "github.com/dgraph-io/badger", module + "/agent/",
			module + "/server/",
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, dep := range deps(t, tt.pkg) {
				for _, bad := range tt.forbidden {
					if strings.HasPrefix(dep, bad) {
						t.Errorf("%s links %s", tt.pkg, dep)
					}
				}
			}
		})
	}
}

// TestPackageDocs checks that each package of the module carries exactly one
// package doc comment, outside test files.
func TestPackageDocs(t *testing.T) {
	cmd := exec.Command("go", "list", "-f", "{{.Dir}}", "./...")
	cmd.Dir = repoRoot()
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	for _, dir := range strings.Fields(string(out)) {
		files := handWritten(dir)
		var documented []string
		for _, f := range files {
			af, err := parser.ParseFile(token.NewFileSet(), f, nil, parser.PackageClauseOnly|parser.ParseComments)
			if err != nil {
				t.Fatalf("parse %s: %v", f, err)
			}
			if af.Doc != nil {
				documented = append(documented, filepath.Base(f))
			}
		}
		rel, _ := filepath.Rel(repoRoot(), dir)
		if len(files) > 0 && len(documented) != 1 {
			t.Errorf("package %s has %d package doc comments %v, want 1", rel, len(documented), documented)
		}
	}
}

// handWritten lists a package's non-test Go files that no generator wrote.
func handWritten(dir string) []string {
	all, _ := filepath.Glob(filepath.Join(dir, "*.go"))
	var files []string
	for _, f := range all {
		generated := strings.HasSuffix(f, "_bpfel.go") || strings.HasSuffix(f, ".pb.go")
		if !generated && !strings.HasSuffix(f, "_test.go") {
			files = append(files, f)
		}
	}
	return files
}
