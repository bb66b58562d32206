package policy

import (
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden from the current output")

// golden compares got with testdata/name, or rewrites it with -update.
func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read golden (run with -update): %v", err)
	}
	if got != string(want) {
		t.Errorf("%s differs from the golden file:\n--- got\n%s\n--- want\n%s", path, got, want)
	}
}

func TestParseErrorsGolden(t *testing.T) {
	files, err := filepath.Glob("testdata/errors/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no error cases: %v", err)
	}
	for _, f := range files {
		name := strings.TrimSuffix(filepath.Base(f), ".yaml")
		t.Run(name, func(t *testing.T) {
			src, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			p, errs := Parse(filepath.Base(f), src)
			if p != nil || len(errs) == 0 {
				t.Fatalf("Parse accepted an invalid policy")
			}
			var b strings.Builder
			for _, e := range errs {
				b.WriteString(e.Error() + "\n")
			}
			golden(t, "errors/"+name+".golden", b.String())
		})
	}
}

func TestParseExample(t *testing.T) {
	src, err := os.ReadFile("../examples/policy.yaml")
	if err != nil {
		t.Fatal(err)
	}
	p, errs := Parse("policy.yaml", src)
	if len(errs) > 0 {
		t.Fatalf("example policy rejected: %v", errs)
	}
	if got := strings.Join(p.Levels, "<"); got != "untrusted<low<medium<high" {
		t.Errorf("levels = %s", got)
	}
	if p.StartLevel(KindService) != "high" || p.StartLevel(KindDevice) != "medium" {
		t.Errorf("start levels = %v", p.Defaults.Levels)
	}
	if len(p.Rules) != 3 || !p.Rules[0].Allow || p.Rules[2].Allow {
		t.Errorf("rules = %+v", p.Rules)
	}
}

func TestParseRules(t *testing.T) {
	tests := []struct {
		name    string
		body    string
		wantErr string // substring of the joined errors; "" means valid
	}{
		{"everything written is everything", `
rules:
  - {name: r, action: allow, subjects: [{devices: ["*"]}],
     destinations: [{cidrs: ["0.0.0.0/0"], ports: ["1-65535"]}]}`, ""},
		{"absent subjects", `
rules:
  - {name: r, action: allow, services: [crm]}`, "rules[0].subjects: required field is missing"},
		{"empty services list", `
rules:
  - {name: r, action: allow, subjects: [{devices: [a]}], services: []}`, "rules[0].services: empty list"},
		{"reversed ports", `
rules:
  - {name: r, action: deny, subjects: [{devices: [a]}],
     destinations: [{cidrs: ["10.0.0.0/8"], ports: ["80-79"]}]}`, "reversed port range"},
		{"missing service", `
rules:
  - {name: r, action: allow, subjects: [{devices: [a]}], services: [erp]}`, `unknown service "erp"`},
		{"duplicate rule", `
rules:
  - {name: r, action: allow, subjects: [{devices: [a]}], services: [crm]}
  - {name: r, action: allow, subjects: [{devices: [b]}], services: [crm]}`, `rule "r" defined twice`},
		{"bad window", `
rules:
  - {name: r, action: allow, subjects: [{devices: [a]}], services: [crm],
     time: [{days: [someday], from: "25:00", to: "08:00"}]}`, `unknown day "someday"`},
	}
	head := `
version: 1
levels: [low, medium]
defaults: {level: low, traffic: deny, unknown_peers: deny}
services:
  - {name: crm, agents: [h], ports: [80], min_level: medium}
`
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, errs := Parse("p.yaml", []byte(head+tt.body))
			var msgs []string
			for _, e := range errs {
				msgs = append(msgs, e.Error())
			}
			joined := strings.Join(msgs, "\n")
			if tt.wantErr == "" && len(errs) > 0 || tt.wantErr != "" && !strings.Contains(joined, tt.wantErr) {
				t.Errorf("errors = %q, want %q", joined, tt.wantErr)
			}
		})
	}
}

func TestWindowInForce(t *testing.T) {
	night := Rule{Windows: []Window{{From: 22 * 60, To: 6 * 60}}}
	night.Windows[0].Days[time.Monday] = true
	tests := []struct {
		name string
		at   string
		want bool
	}{
		{"monday late", "2026-11-30T23:00:00Z", true},
		{"tuesday early belongs to monday", "2026-12-01T05:59:00Z", true},
		{"tuesday at six", "2026-12-01T06:00:00Z", false},
		{"monday early belongs to sunday", "2026-11-30T01:00:00Z", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			at, _ := time.Parse(time.RFC3339, tt.at)
			if got := night.InForce(at); got != tt.want {
				t.Errorf("InForce(%s) = %v, want %v", tt.at, got, tt.want)
			}
		})
	}
}

func TestKernelAtLeast(t *testing.T) {
	tests := []struct {
		name, have, want string
		ok               bool
	}{
		{"newer minor", "6.18.0-rc1", "5.15", true},
		{"equal", "5.15.0", "5.15", true},
		{"older", "5.4.100", "5.15", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := KernelAtLeast(tt.have, tt.want); got != tt.ok {
				t.Errorf("KernelAtLeast(%s, %s) = %v", tt.have, tt.want, got)
			}
		})
	}
}

func FuzzParse(f *testing.F) {
	for _, glob := range []string{"testdata/errors/*.yaml", "../examples/*.yaml", "testdata/compile/*.yaml"} {
		files, _ := filepath.Glob(glob)
		for _, file := range files {
			src, err := os.ReadFile(file)
			if err == nil {
				f.Add(src)
			}
		}
	}
	f.Fuzz(func(t *testing.T, src []byte) {
		p, errs := Parse("fuzz.yaml", src)
		if (p == nil) == (len(errs) == 0) {
			t.Fatalf("Parse returned policy %v with %d errors", p != nil, len(errs))
		}
		for _, e := range errs {
			if e.Line < 1 || e.Column < 1 || e.Message == "" {
				t.Fatalf("unpositioned error %+v", e)
			}
		}
		if p != nil {
			w := &World{Agents: map[string]*Agent{"a": {Name: "a"}}}
			CompileAgent(p, w, "a")
		}
	})
}
