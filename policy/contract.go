package policy

import (
	"fmt"
	"net/netip"
)

// Error is one validation error, positioned in the source document.
type Error struct {
	File    string // document name as given to the parser
	Line    int    // 1-based
	Column  int    // 1-based
	Field   string // field path, e.g. "rules[2].services[0]"
	Message string
}

// Error formats the error as FILE:LINE:COL: FIELD: MESSAGE.
func (e Error) Error() string {
	if e.Field == "" {
		return fmt.Sprintf("%s:%d:%d: %s", e.File, e.Line, e.Column, e.Message)
	}
	return fmt.Sprintf("%s:%d:%d: %s: %s", e.File, e.Line, e.Column, e.Field, e.Message)
}

// IndicatorKind says what an indicator of compromise matches.
type IndicatorKind string

// Indicator kinds.
const (
	IndicatorIP     IndicatorKind = "ip"     // an address or prefix (IPv4 or IPv6)
	IndicatorSHA256 IndicatorKind = "sha256" // an executable's SHA-256
)

// Indicator is one threat-intelligence indicator, from the policy itself or
// from a feed.
type Indicator struct {
	Kind       IndicatorKind
	Prefix     netip.Prefix // IndicatorIP: a single address is a /32 or /128
	SHA256     string       // IndicatorSHA256: lowercase hex
	Confidence int          // 0-100
	ID         string       // the indicator's id in its source (STIX id, CSV line)
	Source     string       // feed name, or "policy"
}
