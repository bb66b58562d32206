package policy

import (
	"fmt"
	"hash/fnv"
	"net/netip"
	"sort"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	vigilpb "github.com/vigilsec/vigil/gen/vigil/v1"
)

// Parse reads and validates a policy document. filename is used only in
// error positions. It returns either a policy and no errors, or nil and
// every error found, sorted by position; a policy with any error is never
// returned.
func Parse(filename string, src []byte) (*Policy, []Error) {
	ps := &parser{file: filename}
	var doc yaml.Node
	if err := yaml.Unmarshal(src, &doc); err != nil {
		return nil, []Error{ps.syntaxError(err)}
	}
	if len(doc.Content) == 0 {
		ps.errAt(&doc, "", "empty policy document")
		return nil, ps.errs
	}

	p := &Policy{}
	ps.document(doc.Content[0], p)
	ps.resolve(p)
	if len(ps.errs) > 0 {
		sortErrors(ps.errs)
		return nil, ps.errs
	}
	return p, nil
}

// parser collects errors while it walks a document.
type parser struct {
	file string
	errs []Error
	refs []reference // names to check once every section is read
	defs []reference // names defined, checked for duplicates
}

// reference is a name used somewhere that must be defined elsewhere.
type reference struct {
	kind string // "level", "service", "group"
	name string
	node *yaml.Node
	path string
}

func (ps *parser) errAt(n *yaml.Node, path, format string, args ...any) {
	line, col := n.Line, n.Column
	if line == 0 {
		line, col = 1, 1
	}
	ps.errs = append(ps.errs, Error{
		File: ps.file, Line: line, Column: col, Field: path,
		Message: fmt.Sprintf(format, args...),
	})
}

func (ps *parser) syntaxError(err error) Error {
	line, msg := 1, err.Error()
	msg = strings.TrimPrefix(msg, "yaml: ")
	if rest, ok := strings.CutPrefix(msg, "line "); ok {
		if n, tail, ok := strings.Cut(rest, ": "); ok {
			if v, convErr := strconv.Atoi(n); convErr == nil {
				line, msg = v, tail
			}
		}
	}
	return Error{File: ps.file, Line: line, Column: 1, Message: "yaml: " + msg}
}

func sortErrors(errs []Error) {
	sort.SliceStable(errs, func(i, j int) bool {
		a, b := errs[i], errs[j]
		if a.Line != b.Line {
			return a.Line < b.Line
		}
		if a.Column != b.Column {
			return a.Column < b.Column
		}
		if a.Field != b.Field {
			return a.Field < b.Field
		}
		return a.Message < b.Message
	})
}

// field describes one key of a mapping.
type field struct {
	name     string
	required bool
	read     func(n *yaml.Node, path string)
}

// mapping reads a mapping node: unknown and duplicate keys and missing
// required keys are errors.
func (ps *parser) mapping(n *yaml.Node, path string, fields []field) {
	if n.Kind != yaml.MappingNode {
		ps.errAt(n, path, "must be a mapping")
		return
	}
	seen := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		ps.mappingKey(k, v, path, fields, seen)
	}
	for _, f := range fields {
		if f.required && !seen[f.name] {
			ps.errAt(n, join(path, f.name), "required field is missing")
		}
	}
}

func (ps *parser) mappingKey(k, v *yaml.Node, path string, fields []field, seen map[string]bool) {
	fp := join(path, k.Value)
	if seen[k.Value] {
		ps.errAt(k, fp, "duplicate field")
		return
	}
	seen[k.Value] = true
	for _, f := range fields {
		if f.name == k.Value {
			f.read(v, fp)
			return
		}
	}
	ps.errAt(k, fp, "unknown field")
}

func join(path, name string) string {
	if path == "" {
		return name
	}
	return path + "." + name
}

// list reads a sequence; an empty sequence is an error, never "everything".
func (ps *parser) list(n *yaml.Node, path string, item func(n *yaml.Node, path string)) {
	if n.Kind != yaml.SequenceNode {
		ps.errAt(n, path, "must be a list")
		return
	}
	if len(n.Content) == 0 {
		ps.errAt(n, path, "empty list (an empty list never means everything)")
		return
	}
	for i, c := range n.Content {
		item(c, fmt.Sprintf("%s[%d]", path, i))
	}
}

func (ps *parser) str(n *yaml.Node, path string) (string, bool) {
	if n.Kind != yaml.ScalarNode || n.Tag == "!!null" {
		ps.errAt(n, path, "must be a scalar value")
		return "", false
	}
	if strings.TrimSpace(n.Value) == "" {
		ps.errAt(n, path, "empty value")
		return "", false
	}
	return n.Value, true
}

func (ps *parser) strInto(dst *string) func(*yaml.Node, string) {
	return func(n *yaml.Node, path string) {
		if v, ok := ps.str(n, path); ok {
			*dst = v
		}
	}
}

func (ps *parser) strList(dst *[]string, check func(n *yaml.Node, path,
	v string) bool) func(*yaml.Node, string) {
	return func(n *yaml.Node, path string) {
		ps.list(n, path, func(c *yaml.Node, cp string) {
			v, ok := ps.str(c, cp)
			if ok && (check == nil || check(c, cp, v)) {
				*dst = append(*dst, v)
			}
		})
	}
}

func (ps *parser) boolInto(dst *bool) func(*yaml.Node, string) {
	return func(n *yaml.Node, path string) {
		v, ok := ps.str(n, path)
		if !ok {
			return
		}
		b, err := strconv.ParseBool(v)
		if err != nil || n.Tag != "!!bool" {
			ps.errAt(n, path, "must be true or false")
			return
		}
		*dst = b
	}
}

func (ps *parser) durationInto(dst *time.Duration) func(*yaml.Node, string) {
	return func(n *yaml.Node, path string) {
		v, ok := ps.str(n, path)
		if !ok {
			return
		}
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			ps.errAt(n, path, "must be a positive duration such as 30m")
			return
		}
		*dst = d
	}
}

func (ps *parser) intInto(dst *int, lo, hi int) func(*yaml.Node, string) {
	return func(n *yaml.Node, path string) {
		v, ok := ps.str(n, path)
		if !ok {
			return
		}
		i, err := strconv.Atoi(v)
		if err != nil || i < lo || i > hi {
			ps.errAt(n, path, "must be an integer from %d to %d", lo, hi)
			return
		}
		*dst = i
	}
}

func (ps *parser) ref(kind, name string, n *yaml.Node, path string) {
	ps.refs = append(ps.refs, reference{kind: kind, name: name, node: n, path: path})
}

// nameInto reads the name of a definition of kind.
func (ps *parser) nameInto(kind string, dst *string) func(*yaml.Node, string) {
	return func(n *yaml.Node, path string) {
		if v, ok := ps.str(n, path); ok {
			*dst = v
			ps.defs = append(ps.defs, reference{kind: kind, name: v, node: n, path: path})
		}
	}
}

func (ps *parser) levelInto(dst *string) func(*yaml.Node, string) {
	return func(n *yaml.Node, path string) {
		if v, ok := ps.str(n, path); ok {
			*dst = v
			ps.ref("level", v, n, path)
		}
	}
}

func (ps *parser) document(n *yaml.Node, p *Policy) {
	var version string
	ps.mapping(n, "", []field{
		{"version", true, func(n *yaml.Node, path string) {
			ps.strInto(&version)(n, path)
			if version != "" && version != strconv.Itoa(FormatVersion) {
				ps.errAt(n, path, "unsupported format version %q: want %d", version, FormatVersion)
			}
		}},
		{"levels", true, ps.levels(p)},
		{"defaults", true, func(n *yaml.Node, path string) { ps.defaults(n, path, &p.Defaults) }},
		{"groups", false, ps.groups(p)},
		{"services", false, ps.services(p)},
		{"rules", false, ps.rules(p)},
		{"protections", false, ps.protections(p)},
		{"posture", false, ps.postureRules(p)},
		{"indicators", false, ps.indicators(p)},
		{"detectors", false, func(n *yaml.Node, path string) { ps.detectors(n, path, &p.Detectors) }},
	})
}

func (ps *parser) levels(p *Policy) func(*yaml.Node, string) {
	return func(n *yaml.Node, path string) {
		p.levelRank = map[string]int{}
		ps.list(n, path, func(c *yaml.Node, cp string) {
			v, ok := ps.str(c, cp)
			if !ok {
				return
			}
			if _, dup := p.levelRank[v]; dup {
				ps.errAt(c, cp, "duplicate level %q", v)
				return
			}
			p.levelRank[v] = len(p.Levels)
			p.Levels = append(p.Levels, v)
		})
	}
}

func (ps *parser) verdictInto(dst *vigilpb.Verdict) func(*yaml.Node, string) {
	return func(n *yaml.Node, path string) {
		v, ok := ps.str(n, path)
		if !ok {
			return
		}
		switch v {
		case "allow":
			*dst = vigilpb.Verdict_VERDICT_ALLOW
		case "deny":
			*dst = vigilpb.Verdict_VERDICT_DENY
		case "audit":
			*dst = vigilpb.Verdict_VERDICT_AUDIT
		default:
			ps.errAt(n, path, "must be allow, deny or audit, not %q", v)
		}
	}
}

func (ps *parser) defaults(n *yaml.Node, path string, d *Defaults) {
	var level string
	var fail string
	d.Levels = map[string]string{}
	ps.mapping(n, path, []field{
		{"level", true, ps.levelInto(&level)},
		{"levels", false, func(n *yaml.Node, path string) { ps.kindLevels(n, path, d.Levels) }},
		{"traffic", true, ps.verdictInto(&d.Traffic)},
		{"unknown_peers", true, ps.verdictInto(&d.UnknownPeers)},
		{"fail_mode", false, func(n *yaml.Node, path string) {
			ps.strInto(&fail)(n, path)
			d.FailMode = failMode(fail)
			if fail != "" && d.FailMode == vigilpb.FailMode_FAIL_MODE_UNSPECIFIED {
				ps.errAt(n, path, "must be last-known, closed or open, not %q", fail)
			}
		}},
	})
	for _, k := range []string{KindUser, KindDevice, KindService, KindProcess} {
		if d.Levels[k] == "" {
			d.Levels[k] = level
		}
	}
	if d.FailMode == vigilpb.FailMode_FAIL_MODE_UNSPECIFIED {
		d.FailMode = vigilpb.FailMode_FAIL_MODE_LAST_KNOWN
	}
}

func failMode(s string) vigilpb.FailMode {
	switch s {
	case "last-known":
		return vigilpb.FailMode_FAIL_MODE_LAST_KNOWN
	case "closed":
		return vigilpb.FailMode_FAIL_MODE_CLOSED
	case "open":
		return vigilpb.FailMode_FAIL_MODE_OPEN
	}
	return vigilpb.FailMode_FAIL_MODE_UNSPECIFIED
}

func (ps *parser) kindLevels(n *yaml.Node, path string, dst map[string]string) {
	var fields []field
	for _, k := range []string{KindUser, KindDevice, KindService, KindProcess} {
		k := k
		fields = append(fields, field{k, false, func(n *yaml.Node, path string) {
			var v string
			ps.levelInto(&v)(n, path)
			dst[k] = v
		}})
	}
	ps.mapping(n, path, fields)
}

func (ps *parser) groups(p *Policy) func(*yaml.Node, string) {
	return func(n *yaml.Node, path string) {
		ps.list(n, path, func(c *yaml.Node, cp string) {
			var g Group
			ps.mapping(c, cp, []field{
				{"name", true, ps.nameInto("group", &g.Name)},
				{"users", true, ps.strList(&g.Users, nil)},
			})
			p.Groups = append(p.Groups, g)
		})
	}
}

func (ps *parser) services(p *Policy) func(*yaml.Node, string) {
	return func(n *yaml.Node, path string) {
		ps.list(n, path, func(c *yaml.Node, cp string) {
			s := Service{Protocol: vigilpb.Protocol_PROTOCOL_TCP}
			ps.mapping(c, cp, []field{
				{"name", true, ps.nameInto("service", &s.Name)},
				{"agents", true, ps.strList(&s.Agents, nil)},
				{"ports", true, ps.portsInto(&s.Ports)},
				{"protocol", false, ps.protocolInto(&s.Protocol)},
				{"min_level", true, ps.levelInto(&s.MinLevel)},
			})
			p.Services = append(p.Services, s)
		})
	}
}

func (ps *parser) protocolInto(dst *vigilpb.Protocol) func(*yaml.Node, string) {
	return func(n *yaml.Node, path string) {
		v, ok := ps.str(n, path)
		if !ok {
			return
		}
		switch v {
		case "tcp":
			*dst = vigilpb.Protocol_PROTOCOL_TCP
		case "udp":
			*dst = vigilpb.Protocol_PROTOCOL_UDP
		case "any":
			*dst = vigilpb.Protocol_PROTOCOL_ANY
		default:
			ps.errAt(n, path, "must be tcp, udp or any, not %q", v)
		}
	}
}

func (ps *parser) portsInto(dst *[]PortRange) func(*yaml.Node, string) {
	return func(n *yaml.Node, path string) {
		ps.list(n, path, func(c *yaml.Node, cp string) {
			v, ok := ps.str(c, cp)
			if !ok {
				return
			}
			r, err := ParsePortRange(v)
			if err != nil {
				ps.errAt(c, cp, "%v", err)
				return
			}
			*dst = append(*dst, r)
		})
	}
}

// ParsePortRange reads "PORT" or "MIN-MAX" (inclusive, 1-65535).
func ParsePortRange(s string) (PortRange, error) {
	lo, hi, isRange := strings.Cut(s, "-")
	if !isRange {
		hi = lo
	}
	a, errA := strconv.ParseUint(strings.TrimSpace(lo), 10, 16)
	b, errB := strconv.ParseUint(strings.TrimSpace(hi), 10, 16)
	if errA != nil || errB != nil || a == 0 || b == 0 {
		return PortRange{}, fmt.Errorf("bad port %q: want 1-65535 or MIN-MAX", s)
	}
	if a > b {
		return PortRange{}, fmt.Errorf("reversed port range %q", s)
	}
	return PortRange{Min: uint16(a), Max: uint16(b)}, nil
}

func (ps *parser) rules(p *Policy) func(*yaml.Node, string) {
	return func(n *yaml.Node, path string) {
		ps.list(n, path, func(c *yaml.Node, cp string) {
			p.Rules = append(p.Rules, ps.rule(c, cp))
		})
	}
}

func (ps *parser) rule(n *yaml.Node, path string) Rule {
	var r Rule
	var action string
	ps.mapping(n, path, []field{
		{"name", true, ps.nameInto("rule", &r.Name)},
		{"action", true, ps.strInto(&action)},
		{"subjects", true, func(n *yaml.Node, path string) {
			ps.list(n, path, func(c *yaml.Node, cp string) {
				r.Subjects = append(r.Subjects, ps.subject(c, cp))
			})
		}},
		{"services", false, ps.strList(&r.Services, func(c *yaml.Node, cp, v string) bool {
			ps.ref("service", v, c, cp)
			return true
		})},
		{"destinations", false, func(n *yaml.Node, path string) {
			ps.list(n, path, func(c *yaml.Node, cp string) {
				r.Destinations = append(r.Destinations, ps.destination(c, cp))
			})
		}},
		{"time", false, func(n *yaml.Node, path string) {
			ps.list(n, path, func(c *yaml.Node, cp string) {
				r.Windows = append(r.Windows, ps.window(c, cp))
			})
		}},
	})
	ps.ruleChecks(n, path, &r, action)
	return r
}

func (ps *parser) ruleChecks(n *yaml.Node, path string, r *Rule, action string) {
	switch action {
	case "allow":
		r.Allow = true
	case "deny", "":
	default:
		ps.errAt(n, join(path, "action"), "must be allow or deny, not %q", action)
	}
	if len(r.Services) == 0 && len(r.Destinations) == 0 {
		ps.errAt(n, path, "rule reaches nothing: set services or destinations")
	}
	// A destination without a protocol takes the stricter reading: an allow
	// admits TCP only, a deny refuses TCP and UDP alike.
	for i := range r.Destinations {
		if r.Destinations[i].Protocol != vigilpb.Protocol_PROTOCOL_UNSPECIFIED {
			continue
		}
		r.Destinations[i].Protocol = vigilpb.Protocol_PROTOCOL_ANY
		if r.Allow {
			r.Destinations[i].Protocol = vigilpb.Protocol_PROTOCOL_TCP
		}
	}
	h := fnv.New32a()
	h.Write([]byte(r.Name))
	r.ID = h.Sum32()&0x7fffffff | 1
}

func (ps *parser) subject(n *yaml.Node, path string) Subject {
	var s Subject
	ps.mapping(n, path, []field{
		{"devices", false, ps.strList(&s.Devices, nil)},
		{"users", false, ps.strList(&s.Users, nil)},
		{"groups", false, ps.strList(&s.Groups, func(c *yaml.Node, cp, v string) bool {
			ps.ref("group", v, c, cp)
			return true
		})},
		{"executables", false, ps.strList(&s.Executables, func(c *yaml.Node, cp, v string) bool {
			if !strings.HasPrefix(v, "/") {
				ps.errAt(c, cp, "executable %q is not an absolute path", v)
				return false
			}
			return true
		})},
		{"sha256", false, ps.strList(&s.SHA256, ps.checkSHA256)},
		{"level", false, ps.levelInto(&s.Level)},
	})
	if n.Kind == yaml.MappingNode && len(s.Devices)+len(s.Users)+len(s.Groups)+
		len(s.Executables)+len(s.SHA256) == 0 {
		ps.errAt(n, path, "empty selector: name devices, users, groups, executables or sha256 "+
			"(\"*\" for every device)")
	}
	return s
}

func (ps *parser) checkSHA256(n *yaml.Node, path, v string) bool {
	if len(v) != 64 || strings.Trim(strings.ToLower(v), "0123456789abcdef") != "" {
		ps.errAt(n, path, "bad sha256 %q: want 64 hex digits", v)
		return false
	}
	return true
}

func (ps *parser) destination(n *yaml.Node, path string) Destination {
	var d Destination // the protocol defaults by the rule's action, in ruleChecks
	ps.mapping(n, path, []field{
		{"cidrs", true, func(n *yaml.Node, path string) {
			ps.list(n, path, func(c *yaml.Node, cp string) {
				if pfx, ok := ps.prefix(c, cp); ok {
					d.CIDRs = append(d.CIDRs, pfx)
				}
			})
		}},
		{"ports", true, ps.portsInto(&d.Ports)},
		{"protocol", false, ps.protocolInto(&d.Protocol)},
	})
	return d
}

func (ps *parser) prefix(n *yaml.Node, path string) (netip.Prefix, bool) {
	v, ok := ps.str(n, path)
	if !ok {
		return netip.Prefix{}, false
	}
	pfx, err := ParsePrefix(v)
	if err != nil {
		ps.errAt(n, path, "%v", err)
		return netip.Prefix{}, false
	}
	return pfx, true
}

// ParsePrefix reads a CIDR or a single address (a /32 or /128). Host bits
// must be zero.
func ParsePrefix(s string) (netip.Prefix, error) {
	if !strings.Contains(s, "/") {
		a, err := netip.ParseAddr(s)
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("bad address %q", s)
		}
		a = a.Unmap()
		return netip.PrefixFrom(a, a.BitLen()), nil
	}
	pfx, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("bad CIDR %q", s)
	}
	if pfx.Masked() != pfx {
		return netip.Prefix{}, fmt.Errorf("bad CIDR %q: host bits set (did you mean %s?)", s, pfx.Masked())
	}
	return pfx, nil
}

var weekdays = map[string]time.Weekday{
	"sun": time.Sunday, "mon": time.Monday, "tue": time.Tuesday, "wed": time.Wednesday,
	"thu": time.Thursday, "fri": time.Friday, "sat": time.Saturday,
}

func (ps *parser) window(n *yaml.Node, path string) Window {
	var w Window
	ps.mapping(n, path, []field{
		{"days", true, func(n *yaml.Node, path string) {
			ps.list(n, path, func(c *yaml.Node, cp string) {
				v, ok := ps.str(c, cp)
				d, known := weekdays[v]
				if ok && !known {
					ps.errAt(c, cp, "unknown day %q: want mon, tue, wed, thu, fri, sat or sun", v)
				}
				w.Days[d] = w.Days[d] || known
			})
		}},
		{"from", true, ps.clockInto(&w.From)},
		{"to", true, ps.clockInto(&w.To)},
	})
	return w
}

func (ps *parser) clockInto(dst *int) func(*yaml.Node, string) {
	return func(n *yaml.Node, path string) {
		v, ok := ps.str(n, path)
		if !ok {
			return
		}
		t, err := time.Parse("15:04", v)
		if err != nil {
			ps.errAt(n, path, "bad time %q: want HH:MM (UTC)", v)
			return
		}
		*dst = t.Hour()*60 + t.Minute()
	}
}
