package intel

import (
	"encoding/hex"
	"fmt"
	"net/netip"
	"strings"

	"github.com/vigilsec/vigil/policy"
)

// DefaultConfidence is the confidence given to an indicator whose feed states
// none: the operator chose to load the feed, so its entries are trusted fully.
const DefaultConfidence = 100

// ParseError says why a feed was rejected. Its text names the source (file
// path or URL), the position (a CSV line or a STIX object id or index) and
// the field.
type ParseError struct {
	Source  string // file path or URL the feed was read from
	Where   string // "line 4", "indicator--…" or "objects[3]"
	Field   string // "value", "pattern", "valid_until", …
	Message string
}

// Error formats the error as SOURCE: WHERE: FIELD: MESSAGE.
func (e *ParseError) Error() string {
	var b strings.Builder
	b.WriteString(e.Source)
	for _, part := range []string{e.Where, e.Field, e.Message} {
		if part != "" {
			b.WriteString(": ")
			b.WriteString(part)
		}
	}
	return b.String()
}

// Skip records a well-formed entry the parser does not support.
type Skip struct {
	Where  string // "line 4" or a STIX id
	Reason string // what is unsupported, e.g. "unsupported type \"domain\""
}

// Result is what a feed yields: the indicators, and the entries skipped.
type Result struct {
	Indicators []policy.Indicator
	Skipped    []Skip
}

// parseAddress returns the /32 or /128 prefix of a single address of the
// given family (4 or 6; 0 accepts either).
func parseAddress(s string, family int) (netip.Prefix, error) {
	addr, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("not an IP address %q", s)
	}
	if addr.Zone() != "" {
		return netip.Prefix{}, fmt.Errorf("address %q has a zone", s)
	}
	if family == 4 && !addr.Is4() {
		return netip.Prefix{}, fmt.Errorf("not an IPv4 address %q", s)
	}
	if family == 6 && (!addr.Is6() || addr.Is4In6()) {
		return netip.Prefix{}, fmt.Errorf("not an IPv6 address %q", s)
	}
	return netip.PrefixFrom(addr, addr.BitLen()), nil
}

// parsePrefix accepts an address or a CIDR prefix of the given family (0:
// either) and returns it with host bits cleared.
func parsePrefix(s string, family int) (netip.Prefix, error) {
	if !strings.Contains(s, "/") {
		return parseAddress(s, family)
	}
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("not a CIDR prefix %q", s)
	}
	if family == 4 && !p.Addr().Is4() {
		return netip.Prefix{}, fmt.Errorf("not an IPv4 prefix %q", s)
	}
	if family == 6 && (!p.Addr().Is6() || p.Addr().Is4In6()) {
		return netip.Prefix{}, fmt.Errorf("not an IPv6 prefix %q", s)
	}
	return p.Masked(), nil
}

// parseSHA256 checks a hex SHA-256 and returns it in lowercase.
func parseSHA256(s string) (string, error) {
	if len(s) != 64 {
		return "", fmt.Errorf("SHA-256 %q is not 64 hex digits", s)
	}
	if _, err := hex.DecodeString(s); err != nil {
		return "", fmt.Errorf("SHA-256 %q is not hex", s)
	}
	return strings.ToLower(s), nil
}

// ipIndicator builds an IP indicator.
func ipIndicator(p netip.Prefix, confidence int, id, source string) policy.Indicator {
	return policy.Indicator{
		Kind: policy.IndicatorIP, Prefix: p, Confidence: confidence, ID: id, Source: source,
	}
}

// hashIndicator builds a SHA-256 indicator.
func hashIndicator(sum string, confidence int, id, source string) policy.Indicator {
	return policy.Indicator{
		Kind: policy.IndicatorSHA256, SHA256: sum, Confidence: confidence, ID: id, Source: source,
	}
}
