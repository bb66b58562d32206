package intel

import (
	"errors"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vigilsec/vigil/policy"
)

const (
	hashA = "4b227777d4dd1fc61c6f884f48641d02b4d121d3fd328cb08b5531fcacdabf8a"
	hashB = "EF2D127DE37B942BAAD06145E54B0C619A1F22327B2EBBCFBEC78F5564AFE39D"
)

func ip(s string) policy.Indicator {
	return policy.Indicator{Kind: policy.IndicatorIP, Prefix: netip.MustParsePrefix(s)}
}

func hash(s string) policy.Indicator {
	return policy.Indicator{Kind: policy.IndicatorSHA256, SHA256: s}
}

// stripMeta keeps what an indicator matches, for comparison.
func stripMeta(inds []policy.Indicator) []policy.Indicator {
	out := make([]policy.Indicator, len(inds))
	for i, ind := range inds {
		out[i] = policy.Indicator{Kind: ind.Kind, Prefix: ind.Prefix, SHA256: ind.SHA256}
	}
	return out
}

func TestParseCSV(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    []policy.Indicator
		ids     []string
		conf    []int
		skipped int
		err     string // substring of the error; "" means success
	}{
		{
			name: "header and every type",
			in: "type,value,confidence\nipv4,198.51.100.7,80\nipv6,2001:db8::1,\n" +
				"cidr,203.0.113.9/24,10\nsha256," + hashB + ",99\n",
			want: []policy.Indicator{ip("198.51.100.7/32"), ip("2001:db8::1/128"),
				ip("203.0.113.0/24"), hash(strings.ToLower(hashB))},
			ids:  []string{"line 2", "line 3", "line 4", "line 5"},
			conf: []int{80, DefaultConfidence, 10, 99},
		},
		{
			name: "no header, comments and two columns",
			in:   "# feed\nipv4, 192.0.2.1\n\nCIDR,2001:db8::/32,5\n",
			want: []policy.Indicator{ip("192.0.2.1/32"), ip("2001:db8::/32")},
			ids:  []string{"line 2", "line 4"},
			conf: []int{DefaultConfidence, 5},
		},
		{
			name:    "unsupported type skipped",
			in:      "domain,evil.example,50\nipv4,192.0.2.1,50\n",
			want:    []policy.Indicator{ip("192.0.2.1/32")},
			ids:     []string{"line 2"},
			conf:    []int{50},
			skipped: 1,
		},
		{name: "ipv6 in ipv4 column", in: "ipv4,2001:db8::1,1\n", err: "feed.csv: line 1: value: not an IPv4 address"},
		{name: "ipv4 in ipv6 column", in: "ipv4,1.2.3.4\nipv6,1.2.3.4\n", err: "line 2: value: not an IPv6 address"},
		{name: "bad cidr", in: "cidr,10.0.0.0/33\n", err: "line 1: value: not a CIDR prefix"},
		{name: "short hash", in: "sha256,abcd\n", err: "line 1: value: SHA-256 \"abcd\" is not 64 hex digits"},
		{name: "confidence over 100", in: "ipv4,1.2.3.4,101\n", err: "line 1: confidence: \"101\" is not an integer 0-100"},
		{name: "too many columns", in: "ipv4,1.2.3.4,1,x\n", err: "line 1: 4 columns"},
		{name: "one column", in: "ipv4\n", err: "line 1: 1 columns"},
		{name: "bad quoting", in: "ipv4,1.2.3.4\nipv4,\"1.2\"3\n", err: "feed.csv: line 2"},
		{
			name: "header only first", in: "ipv4,1.2.3.4\ntype,value\n",
			want: []policy.Indicator{ip("1.2.3.4/32")}, ids: []string{"line 1"},
			conf: []int{DefaultConfidence}, skipped: 1,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, err := ParseCSV(strings.NewReader(tt.in), "feed.csv", "f1")
			if tt.err != "" {
				var pe *ParseError
				if err == nil || !errors.As(err, &pe) || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("err = %v, want a ParseError containing %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			checkResult(t, res, tt.want, tt.ids, tt.conf, "f1")
			if len(res.Skipped) != tt.skipped {
				t.Errorf("skipped = %v, want %d", res.Skipped, tt.skipped)
			}
		})
	}
}

func checkResult(t *testing.T, res *Result, want []policy.Indicator, ids []string, conf []int, feed string) {
	t.Helper()
	if got := stripMeta(res.Indicators); !slices.Equal(got, want) {
		t.Fatalf("indicators = %v, want %v", got, want)
	}
	for i, ind := range res.Indicators {
		if ind.ID != ids[i] || ind.Confidence != conf[i] || ind.Source != feed {
			t.Errorf("indicator %d = (id %q, confidence %d, source %q), want (%q, %d, %q)",
				i, ind.ID, ind.Confidence, ind.Source, ids[i], conf[i], feed)
		}
	}
}

// bundle wraps STIX objects in a bundle.
func bundle(objects ...string) string {
	return `{"type":"bundle","id":"bundle--1","objects":[` + strings.Join(objects, ",") + `]}`
}

// indicator returns a STIX indicator object; extra is appended raw.
func indicator(id, pattern, extra string) string {
	p := strings.ReplaceAll(pattern, `\`, `\\`)
	return `{"type":"indicator","spec_version":"2.1","id":"indicator--` + id +
		`","pattern_type":"stix","pattern":"` + p + `"` + extra + `}`
}

func TestParseSTIX(t *testing.T) {
	now := time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC)
	tests := []struct {
		name    string
		in      string
		want    []policy.Indicator
		ids     []string
		conf    []int
		skipped []string // skip reasons, substrings
		err     string
	}{
		{
			name: "supported patterns",
			in: bundle(`{"type":"identity","id":"identity--x","name":"acme"}`,
				indicator("a", "[ipv4-addr:value = '198.51.100.7']", `,"confidence":70`),
				indicator("b", "[ipv4-addr:value = '203.0.113.0/24']", ""),
				indicator("c", "[ipv6-addr:value = '2001:db8::/32']", ""),
				indicator("d", "[file:hashes.'SHA-256' = '"+hashB+"']", `,"valid_until":"2027-01-01T00:00:00Z"`)),
			want: []policy.Indicator{ip("198.51.100.7/32"), ip("203.0.113.0/24"),
				ip("2001:db8::/32"), hash(strings.ToLower(hashB))},
			ids:  []string{"indicator--a", "indicator--b", "indicator--c", "indicator--d"},
			conf: []int{70, DefaultConfidence, DefaultConfidence, DefaultConfidence},
		},
		{
			name: "or inside and between observations",
			in: bundle(indicator("a", "[ipv4-addr:value = '192.0.2.1' OR ipv4-addr:value = '192.0.2.2']"+
				" OR [file:hashes.'SHA-256' = '"+hashA+"']", `,"confidence":5`)),
			want: []policy.Indicator{ip("192.0.2.1/32"), ip("192.0.2.2/32"), hash(hashA)},
			ids:  []string{"indicator--a", "indicator--a", "indicator--a"},
			conf: []int{5, 5, 5},
		},
		{
			name: "skipped with reasons",
			in: bundle(
				indicator("rev", "[ipv4-addr:value = '192.0.2.1']", `,"revoked":true`),
				indicator("exp", "[ipv4-addr:value = '192.0.2.2']", `,"valid_until":"2026-05-31T23:59:59Z"`),
				indicator("fut", "[ipv4-addr:value = '192.0.2.3']", `,"valid_from":"2026-06-02T00:00:00Z"`),
				indicator("and", "[ipv4-addr:value = '192.0.2.4' AND ipv4-addr:value = '192.0.2.5']", ""),
				indicator("fol", "[ipv4-addr:value = '192.0.2.4'] FOLLOWEDBY [ipv4-addr:value = '192.0.2.5']", ""),
				indicator("dom", "[domain-name:value = 'evil.example']", ""),
				indicator("md5", "[file:hashes.MD5 = 'd41d8cd98f00b204e9800998ecf8427e']", ""),
				indicator("op", "[ipv4-addr:value != '192.0.2.4']", ""),
				indicator("match", "[ipv4-addr:value MATCHES '^192']", ""),
				indicator("within", "[ipv4-addr:value = '192.0.2.4'] WITHIN 5 SECONDS", ""),
				indicator("paren", "([ipv4-addr:value = '192.0.2.4'])", ""),
				indicator("list", "[network-traffic:extensions[0].x = 'y']", ""),
				`{"type":"indicator","id":"indicator--sig","pattern_type":"sigma","pattern":"title: x"}`,
				indicator("ok", "[ipv4-addr:value = '192.0.2.9']", "")),
			want: []policy.Indicator{ip("192.0.2.9/32")},
			ids:  []string{"indicator--ok"},
			conf: []int{DefaultConfidence},
			skipped: []string{"revoked", "expired", "not valid before", "AND", "FOLLOWEDBY",
				`object path "domain-name:value"`, `object path "file:hashes.MD5"`, `operator "!="`,
				`operator "MATCHES"`, "WITHIN", "parenthesized", "network-traffic", `pattern_type "sigma"`},
		},
		{name: "not a bundle", in: `{"type":"indicator"}`, err: "intel.json: type: \"indicator\" is not a STIX bundle"},
		{name: "json syntax", in: "{\"type\":\"bundle\",\n\"objects\":[}", err: "intel.json: line 2"},
		{name: "bad ip value", in: bundle(indicator("x", "[ipv4-addr:value = '999.1.1.1']", "")),
			err: "intel.json: indicator--x: pattern: not an IP address"},
		{name: "ipv6 in ipv4 path", in: bundle(indicator("x", "[ipv4-addr:value = '2001:db8::1']", "")),
			err: "indicator--x: pattern: not an IPv4 address"},
		{name: "bad hash", in: bundle(indicator("x", "[file:hashes.'SHA-256' = 'zz']", "")),
			err: "indicator--x: pattern: SHA-256"},
		{name: "unterminated string", in: bundle(indicator("x", "[ipv4-addr:value = '1.2.3.4]", "")),
			err: "indicator--x: pattern: malformed pattern: unterminated string"},
		{name: "missing bracket", in: bundle(indicator("x", "[ipv4-addr:value = '1.2.3.4'", "")),
			err: "indicator--x: pattern: malformed pattern"},
		{name: "garbage after", in: bundle(indicator("x", "[ipv4-addr:value = '1.2.3.4'] ]", "")),
			err: "indicator--x: pattern: malformed pattern"},
		{name: "missing pattern", in: bundle(`{"type":"indicator","id":"indicator--x","pattern_type":"stix"}`),
			err: "indicator--x: pattern: missing"},
		{name: "missing pattern_type", in: bundle(`{"type":"indicator","id":"indicator--x","pattern":"[ipv4-addr:value = '1.2.3.4']"}`),
			err: "indicator--x: pattern_type: missing"},
		{name: "bad id", in: bundle(`{"type":"indicator","id":"malware--x"}`),
			err: "objects[0]: id: \"malware--x\" is not an indicator id"},
		{name: "confidence range", in: bundle(indicator("x", "[ipv4-addr:value = '1.2.3.4']", `,"confidence":101`)),
			err: "indicator--x: confidence: 101 is not 0-100"},
		{name: "confidence type", in: bundle(indicator("x", "[ipv4-addr:value = '1.2.3.4']", `,"confidence":"high"`)),
			err: "objects[0]: confidence"},
		{name: "bad valid_until", in: bundle(indicator("x", "[ipv4-addr:value = '1.2.3.4']", `,"valid_until":"tomorrow"`)),
			err: "indicator--x: valid_until: \"tomorrow\" is not an RFC 3339 timestamp"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, err := ParseSTIX(strings.NewReader(tt.in), "intel.json", "f2", now)
			if tt.err != "" {
				var pe *ParseError
				if err == nil || !errors.As(err, &pe) || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("err = %v, want a ParseError containing %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			checkResult(t, res, tt.want, tt.ids, tt.conf, "f2")
			if len(res.Skipped) != len(tt.skipped) {
				t.Fatalf("skipped = %v, want %d", res.Skipped, len(tt.skipped))
			}
			for i, s := range res.Skipped {
				if !strings.Contains(s.Reason, tt.skipped[i]) {
					t.Errorf("skip %d = %+v, want reason containing %q", i, s, tt.skipped[i])
				}
			}
		})
	}
}

func TestPatternEscapes(t *testing.T) {
	cmps, err := parsePattern(`[file:hashes.'SHA-256' = 'a\'b\\c']`)
	if err != nil {
		t.Fatal(err)
	}
	if len(cmps) != 1 || cmps[0].value != `a'b\c` || cmps[0].path != pathSHA256 {
		t.Fatalf("comparisons = %+v", cmps)
	}
	if _, err := parsePattern(`[file:hashes.'SHA-256' = 'a\nb']`); !errors.Is(err, errSyntax) {
		t.Fatalf("bad escape: err = %v, want a syntax error", err)
	}
}
