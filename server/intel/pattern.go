package intel

import (
	"errors"
	"fmt"
	"strings"
)

// The STIX patterning subset Vigil supports is
//
//	pattern     = observation { "OR" observation }
//	observation = "[" comparison { "OR" comparison } "]"
//	comparison  = path "=" string
//	path        = "ipv4-addr:value" | "ipv6-addr:value" | "file:hashes.'SHA-256'"
//
// A pattern outside the subset but not malformed (AND, FOLLOWEDBY,
// qualifiers, other operators, other object paths, non-string constants) is
// unsupported and its indicator is skipped; a malformed pattern (unbalanced
// brackets, an unterminated string) is a syntax error.

// Object paths the subset supports.
const (
	pathIPv4   = "ipv4-addr:value"
	pathIPv6   = "ipv6-addr:value"
	pathSHA256 = "file:hashes.'SHA-256'"
)

var (
	// errUnsupported wraps patterns outside the supported subset.
	errUnsupported = errors.New("unsupported pattern")
	// errSyntax wraps malformed patterns.
	errSyntax = errors.New("malformed pattern")
)

// comparison is one supported `path = 'value'` test.
type comparison struct {
	path  string
	value string
}

// patternParser is a cursor over one pattern.
type patternParser struct {
	s   string
	pos int
}

// parsePattern returns the comparisons of a pattern in the subset, which are
// combined by OR: the indicator matches when any one of them does.
func parsePattern(s string) ([]comparison, error) {
	p := &patternParser{s: s}
	var out []comparison
	for {
		cmps, err := p.observation()
		if err != nil {
			return nil, err
		}
		out = append(out, cmps...)

		p.skipSpace()
		if p.done() {
			return out, nil
		}
		if err := p.expectOr("after an observation"); err != nil {
			return nil, err
		}
	}
}

// observation parses "[" comparison { "OR" comparison } "]".
func (p *patternParser) observation() ([]comparison, error) {
	p.skipSpace()
	switch {
	case p.done():
		return nil, fmt.Errorf("%w: expected an observation at offset %d", errSyntax, p.pos)
	case p.s[p.pos] == '(':
		return nil, fmt.Errorf("%w: parenthesized observations", errUnsupported)
	case p.s[p.pos] != '[':
		return nil, fmt.Errorf("%w: expected '[' at offset %d", errSyntax, p.pos)
	}
	p.pos++

	var out []comparison
	for {
		c, err := p.comparison()
		if err != nil {
			return nil, err
		}
		out = append(out, c)

		p.skipSpace()
		if !p.done() && p.s[p.pos] == ']' {
			p.pos++
			return out, nil
		}
		if err := p.expectOr("in an observation"); err != nil {
			return nil, err
		}
	}
}

// comparison parses path "=" string.
func (p *patternParser) comparison() (comparison, error) {
	p.skipSpace()
	path, err := p.path()
	if err != nil {
		return comparison{}, err
	}
	switch path {
	case pathIPv4, pathIPv6, pathSHA256:
	default:
		return comparison{}, fmt.Errorf("%w: object path %q", errUnsupported, path)
	}

	p.skipSpace()
	if op := p.word(); op != "=" {
		if op == "" {
			return comparison{}, fmt.Errorf("%w: expected an operator at offset %d", errSyntax, p.pos)
		}
		return comparison{}, fmt.Errorf("%w: operator %q", errUnsupported, op)
	}
	p.skipSpace()
	value, err := p.str()
	if err != nil {
		return comparison{}, err
	}
	return comparison{path: path, value: value}, nil
}

// expectOr consumes "OR"; any other keyword is unsupported, anything else
// malformed.
func (p *patternParser) expectOr(context string) error {
	at := p.pos
	switch w := p.word(); w {
	case "OR":
		return nil
	case "AND", "FOLLOWEDBY", "WITHIN", "REPEATS", "START", "STOP":
		return fmt.Errorf("%w: %s %s", errUnsupported, w, context)
	case "":
		if p.done() {
			return fmt.Errorf("%w: unexpected end %s", errSyntax, context)
		}
		return fmt.Errorf("%w: unexpected %q at offset %d", errSyntax, p.s[at:at+1], at)
	default:
		return fmt.Errorf("%w: unexpected %q %s", errSyntax, w, context)
	}
}

// path reads an object path; single-quoted segments may hold any character.
func (p *patternParser) path() (string, error) {
	start := p.pos
	for !p.done() {
		c := p.s[p.pos]
		if c == '\'' {
			if _, err := p.str(); err != nil {
				return "", err
			}
			continue
		}
		if c == '[' && p.pos > start {
			p.listIndex()
			continue
		}
		if !isPathChar(c) {
			break
		}
		p.pos++
	}
	if p.pos == start {
		return "", fmt.Errorf("%w: expected an object path at offset %d", errSyntax, start)
	}
	return p.s[start:p.pos], nil
}

// listIndex consumes a list index such as "[0]" or "[*]" inside a path; an
// unclosed index is left for the caller to reject.
func (p *patternParser) listIndex() {
	end := strings.IndexByte(p.s[p.pos:], ']')
	if end < 0 {
		p.pos = len(p.s)
		return
	}
	p.pos += end + 1
}

// word reads an operator or keyword: a run of letters, or of "=!<>".
func (p *patternParser) word() string {
	class := func(c byte) int {
		switch {
		case strings.IndexByte("=!<>", c) >= 0:
			return 1
		case c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z':
			return 2
		}
		return 0
	}
	start := p.pos
	if p.done() || class(p.s[p.pos]) == 0 {
		return ""
	}
	for k := class(p.s[start]); !p.done() && class(p.s[p.pos]) == k; p.pos++ {
	}
	return p.s[start:p.pos]
}

// str reads a single-quoted string constant with \' and \\ escapes. Other
// constants (numbers, hex, binary, timestamps, lists) are unsupported.
func (p *patternParser) str() (string, error) {
	if p.done() {
		return "", fmt.Errorf("%w: expected a string at offset %d", errSyntax, p.pos)
	}
	if p.s[p.pos] != '\'' {
		return "", fmt.Errorf("%w: non-string constant at offset %d", errUnsupported, p.pos)
	}
	var b strings.Builder
	for p.pos++; !p.done(); p.pos++ {
		switch c := p.s[p.pos]; c {
		case '\'':
			p.pos++
			return b.String(), nil
		case '\\':
			p.pos++
			if p.done() || (p.s[p.pos] != '\'' && p.s[p.pos] != '\\') {
				return "", fmt.Errorf("%w: bad escape at offset %d", errSyntax, p.pos-1)
			}
			b.WriteByte(p.s[p.pos])
		default:
			b.WriteByte(c)
		}
	}
	return "", fmt.Errorf("%w: unterminated string", errSyntax)
}

func (p *patternParser) skipSpace() {
	for !p.done() && strings.IndexByte(" \t\r\n", p.s[p.pos]) >= 0 {
		p.pos++
	}
}

func (p *patternParser) done() bool { return p.pos >= len(p.s) }

// isPathChar reports whether c may appear unquoted in an object path.
func isPathChar(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
		strings.IndexByte("-_:.*", c) >= 0
}
