package policy

import (
	"fmt"
	"strings"

	"gopkg.in/yaml.v3"
)

// Detector names the protection rules may match.
var Detectors = []string{
	"threat-intel", "exec-writable-dir", "shell-from-service", "connect-burst",
	"privilege-gain", "fingerprint-change", "posture", "event-loss", "report",
	"address-conflict",
}

func (ps *parser) protections(p *Policy) func(*yaml.Node, string) {
	return func(n *yaml.Node, path string) {
		ps.list(n, path, func(c *yaml.Node, cp string) {
			var pr Protection
			ps.mapping(c, cp, []field{
				{"name", true, ps.nameInto("protection", &pr.Name)},
				{"when", true, func(n *yaml.Node, path string) { ps.condition(n, path, &pr.When) }},
				{"respond", true, func(n *yaml.Node, path string) { ps.response(n, path, &pr.Respond) }},
			})
			p.Protections = append(p.Protections, pr)
		})
	}
}

func (ps *parser) condition(n *yaml.Node, path string, c *Condition) {
	ps.mapping(n, path, []field{
		{"detectors", true, ps.strList(&c.Detectors, func(n *yaml.Node, path, v string) bool {
			return ps.oneOf(n, path, "detector", v, Detectors)
		})},
		{"entity", false, func(n *yaml.Node, path string) {
			ps.strInto(&c.EntityKind)(n, path)
			ps.oneOf(n, path, "entity kind", c.EntityKind, kinds)
		}},
		{"min_severity", false, func(n *yaml.Node, path string) {
			ps.strInto(&c.MinSeverity)(n, path)
			ps.oneOf(n, path, "severity", c.MinSeverity, Severities)
		}},
	})
}

var kinds = []string{KindUser, KindDevice, KindService, KindProcess}

func (ps *parser) oneOf(n *yaml.Node, path, what, v string, allowed []string) bool {
	if v == "" || contains(allowed, v) {
		return true
	}
	ps.errAt(n, path, "unknown %s %q: want one of %s", what, v, strings.Join(allowed, ", "))
	return false
}

func (ps *parser) response(n *yaml.Node, path string, r *Response) {
	ps.mapping(n, path, []field{
		{"set_level", false, func(n *yaml.Node, path string) {
			r.SetLevel = ps.levelChange(n, path, false)
		}},
		{"lower_level", false, func(n *yaml.Node, path string) {
			r.LowerLevel = ps.levelChange(n, path, true)
		}},
		{"deny", false, func(n *yaml.Node, path string) { r.Deny = ps.hold(n, path) }},
		{"quarantine", false, func(n *yaml.Node, path string) { r.Quarantine = ps.hold(n, path) }},
		{"kill", false, ps.boolInto(&r.Kill)},
		{"kill_on_exec", false, ps.boolInto(&r.KillOnExec)},
		{"cut", false, ps.boolInto(&r.Cut)},
		{"restore", false, ps.boolInto(&r.Restore)},
	})
	if n.Kind == yaml.MappingNode && *r == (Response{}) {
		ps.errAt(n, path, "empty response: name at least one action")
	}
}

func (ps *parser) levelChange(n *yaml.Node, path string, relative bool) *LevelChange {
	lc := &LevelChange{Target: KindDevice}
	fields := []field{
		{"target", false, func(n *yaml.Node, path string) {
			ps.strInto(&lc.Target)(n, path)
			ps.oneOf(n, path, "target", lc.Target, kinds)
		}},
		{"for", false, ps.durationInto(&lc.For)},
	}
	if relative {
		fields = append(fields, field{"steps", true, ps.intInto(&lc.Steps, 1, 100)})
	} else {
		fields = append(fields, field{"level", true, ps.levelInto(&lc.Level)})
	}
	ps.mapping(n, path, fields)
	return lc
}

func (ps *parser) hold(n *yaml.Node, path string) *Hold {
	h := &Hold{}
	ps.mapping(n, path, []field{{"for", false, ps.durationInto(&h.For)}})
	return h
}

func (ps *parser) postureRules(p *Policy) func(*yaml.Node, string) {
	return func(n *yaml.Node, path string) {
		ps.list(n, path, func(c *yaml.Node, cp string) {
			r := PostureRule{Severity: "medium"}
			ps.mapping(c, cp, []field{
				{"name", true, ps.nameInto("posture rule", &r.Name)},
				{"agents", true, ps.strList(&r.Agents, nil)},
				{"os", false, ps.strList(&r.OS, nil)},
				{"kernel_min", false, ps.strInto(&r.KernelMin)},
				{"required_processes", false, ps.strList(&r.RequiredProcesses, nil)},
				{"forbidden_processes", false, ps.strList(&r.ForbiddenProcesses, nil)},
				{"forbidden_ports", false, ps.strList(&r.ForbiddenPorts, ps.checkListenPort)},
				{"severity", false, func(n *yaml.Node, path string) {
					ps.strInto(&r.Severity)(n, path)
					ps.oneOf(n, path, "severity", r.Severity, Severities)
				}},
			})
			ps.postureChecks(c, cp, &r)
			p.Posture = append(p.Posture, r)
		})
	}
}

func (ps *parser) postureChecks(n *yaml.Node, path string, r *PostureRule) {
	if r.KernelMin != "" && len(versionParts(r.KernelMin)) == 0 {
		ps.errAt(n, join(path, "kernel_min"), "bad kernel version %q", r.KernelMin)
	}
	if len(r.OS)+len(r.RequiredProcesses)+len(r.ForbiddenProcesses)+len(r.ForbiddenPorts) == 0 &&
		r.KernelMin == "" && n.Kind == yaml.MappingNode {
		ps.errAt(n, path, "posture rule checks nothing")
	}
}

func (ps *parser) checkListenPort(n *yaml.Node, path, v string) bool {
	proto, port, ok := strings.Cut(v, ":")
	if _, err := ParsePortRange(port); !ok || err != nil || (proto != "tcp" && proto != "udp") {
		ps.errAt(n, path, "bad listening port %q: want tcp:PORT or udp:PORT", v)
		return false
	}
	return true
}

func (ps *parser) indicators(p *Policy) func(*yaml.Node, string) {
	return func(n *yaml.Node, path string) {
		ps.list(n, path, func(c *yaml.Node, cp string) {
			ps.indicator(c, cp, p)
		})
	}
}

func (ps *parser) indicator(n *yaml.Node, path string, p *Policy) {
	ind := Indicator{Source: "policy", Confidence: 100}
	var cidr, sha string
	var koe bool
	ps.mapping(n, path, []field{
		{"id", true, ps.strInto(&ind.ID)},
		{"cidr", false, ps.strInto(&cidr)},
		{"sha256", false, ps.strInto(&sha)},
		{"confidence", false, ps.intInto(&ind.Confidence, 0, 100)},
		{"kill_on_exec", false, ps.boolInto(&koe)},
	})
	switch {
	case cidr != "" && sha != "", cidr == "" && sha == "" && n.Kind == yaml.MappingNode:
		ps.errAt(n, path, "indicator needs exactly one of cidr or sha256")
	case cidr != "":
		pfx, err := ParsePrefix(cidr)
		if err != nil {
			ps.errAt(n, join(path, "cidr"), "%v", err)
		}
		ind.Kind, ind.Prefix = IndicatorIP, pfx
	case sha != "":
		ps.checkSHA256(n, join(path, "sha256"), sha)
		ind.Kind, ind.SHA256 = IndicatorSHA256, strings.ToLower(sha)
		if koe {
			p.KillOnExec = append(p.KillOnExec, ind.SHA256)
		}
	}
	p.Indicators = append(p.Indicators, ind)
}

func (ps *parser) detectors(n *yaml.Node, path string, d *DetectorSettings) {
	ps.mapping(n, path, []field{
		{"scan_count", false, ps.intInto(&d.ScanCount, 1, 1_000_000)},
		{"scan_window", false, ps.durationInto(&d.ScanWindow)},
		{"shell_parents_allowed", false, ps.strList(&d.ShellParentsAllowed, nil)},
		{"privilege_parents_allowed", false, ps.strList(&d.PrivilegeParentsOK, nil)},
		{"writable_prefixes", false, ps.strList(&d.WritablePrefixes, nil)},
	})
}

// resolve checks names across sections and builds the lookup indexes.
func (ps *parser) resolve(p *Policy) {
	p.services = map[string]*Service{}
	p.groups = map[string]*Group{}
	for i := range p.Services {
		p.services[p.Services[i].Name] = &p.Services[i]
	}
	for i := range p.Groups {
		p.groups[p.Groups[i].Name] = &p.Groups[i]
	}
	for _, r := range ps.refs {
		ps.checkRef(p, r)
	}
	ps.unique(p)
	p.Detectors.fillDefaults()
}

func (ps *parser) checkRef(p *Policy, r reference) {
	var ok bool
	switch r.kind {
	case "level":
		_, ok = p.levelRank[r.name]
	case "service":
		_, ok = p.services[r.name]
	case "group":
		_, ok = p.groups[r.name]
	}
	if !ok {
		ps.errAt(r.node, r.path, "unknown %s %q", r.kind, r.name)
	}
}

// unique reports names defined twice and rule names whose ids collide.
func (ps *parser) unique(p *Policy) {
	seen := map[string]bool{}
	for _, d := range ps.defs {
		key := d.kind + "/" + d.name
		if seen[key] {
			ps.errAt(d.node, d.path, "%s %q defined twice", d.kind, d.name)
		}
		seen[key] = true
	}
	ids := map[uint32]string{}
	for _, r := range p.Rules {
		if other, dup := ids[r.ID]; dup && other != r.Name {
			ps.errs = append(ps.errs, Error{File: ps.file, Line: 1, Column: 1, Field: "rules",
				Message: fmt.Sprintf("rules %q and %q hash to the same id: rename one", other, r.Name)})
		}
		ids[r.ID] = r.Name
	}
}

func (d *DetectorSettings) fillDefaults() {
	if d.ScanCount == 0 {
		d.ScanCount = 20
	}
	if d.ScanWindow == 0 {
		d.ScanWindow = 10_000_000_000
	}
	if d.ShellParentsAllowed == nil {
		d.ShellParentsAllowed = []string{"/usr/sbin/sshd", "/usr/bin/sshd", "/usr/bin/login",
			"/usr/bin/tmux", "/usr/bin/screen", "/usr/lib/systemd/systemd", "/sbin/init"}
	}
	if d.PrivilegeParentsOK == nil {
		d.PrivilegeParentsOK = []string{"/usr/bin/sudo", "/usr/bin/su", "/bin/su",
			"/usr/bin/doas", "/usr/bin/pkexec", "/usr/sbin/sshd", "/usr/bin/newgrp"}
	}
	if d.WritablePrefixes == nil {
		d.WritablePrefixes = []string{"/tmp/", "/var/tmp/", "/dev/shm/", "memfd:"}
	}
}

// versionParts reads the leading dotted numbers of a kernel release
// ("6.18.0-rc1" → 6, 18, 0).
func versionParts(v string) []int {
	var out []int
	for _, part := range strings.Split(v, ".") {
		n := 0
		digits := 0
		for _, c := range part {
			if c < '0' || c > '9' {
				break
			}
			n = n*10 + int(c-'0')
			digits++
		}
		if digits == 0 {
			break
		}
		out = append(out, n)
		if digits < len(part) {
			break
		}
	}
	return out
}

// KernelAtLeast reports whether kernel release have is at least want.
func KernelAtLeast(have, want string) bool {
	h, w := versionParts(have), versionParts(want)
	for i := range w {
		if i >= len(h) {
			return false
		}
		if h[i] != w[i] {
			return h[i] > w[i]
		}
	}
	return true
}
