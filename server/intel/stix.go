package intel

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/vigilsec/vigil/policy"
)

// stixObject holds the fields of a STIX 2.1 object the parser reads.
type stixObject struct {
	Type        string  `json:"type"`
	ID          string  `json:"id"`
	Pattern     *string `json:"pattern"`
	PatternType string  `json:"pattern_type"`
	ValidFrom   string  `json:"valid_from"`
	ValidUntil  string  `json:"valid_until"`
	Revoked     bool    `json:"revoked"`
	Confidence  *int    `json:"confidence"`
}

// stixBundle is a STIX 2.1 bundle.
type stixBundle struct {
	Type    string            `json:"type"`
	Objects []json.RawMessage `json:"objects"`
}

// ParseSTIX reads a STIX 2.1 bundle and returns an indicator for every
// comparison of every usable "indicator" object; other object types are
// ignored. Indicators that are revoked, expired (valid_until not after now),
// not yet valid, or whose pattern is outside the supported subset (see
// parsePattern) are skipped with a reason. source names the file or URL in
// errors, feed becomes each indicator's Source, and ID is the STIX id.
func ParseSTIX(r io.Reader, source, feed string, now time.Time) (*Result, error) {
	data, err := io.ReadAll(r)
	if err != nil {
		return nil, &ParseError{Source: source, Message: err.Error()}
	}
	var bundle stixBundle
	if err := json.Unmarshal(data, &bundle); err != nil {
		return nil, jsonError(source, "", data, err)
	}
	if bundle.Type != "bundle" {
		return nil, &ParseError{Source: source, Field: "type",
			Message: fmt.Sprintf("%q is not a STIX bundle", bundle.Type)}
	}

	res := &Result{}
	for i, raw := range bundle.Objects {
		if err := parseSTIXObject(res, raw, i, feed, now); err != nil {
			err.Source = source
			return nil, err
		}
	}
	return res, nil
}

// parseSTIXObject appends one object's indicators to res, or a skip.
func parseSTIXObject(res *Result, raw json.RawMessage, i int, feed string, now time.Time) *ParseError {
	var head struct {
		Type string `json:"type"`
	}
	where := fmt.Sprintf("objects[%d]", i)
	if err := json.Unmarshal(raw, &head); err != nil {
		return jsonError("", where, raw, err)
	}
	if head.Type != "indicator" {
		return nil
	}
	var obj stixObject
	if err := json.Unmarshal(raw, &obj); err != nil {
		return jsonError("", where, raw, err)
	}
	if !strings.HasPrefix(obj.ID, "indicator--") || len(obj.ID) == len("indicator--") {
		return &ParseError{Where: where, Field: "id", Message: fmt.Sprintf("%q is not an indicator id", obj.ID)}
	}

	where = obj.ID
	reason, perr := stixUsable(&obj, now)
	if perr != nil {
		perr.Where = where
		return perr
	}
	if reason != "" {
		res.Skipped = append(res.Skipped, Skip{Where: where, Reason: reason})
		return nil
	}

	inds, err := stixIndicators(&obj, feed)
	if errors.Is(err, errUnsupported) {
		res.Skipped = append(res.Skipped, Skip{Where: where, Reason: err.Error()})
		return nil
	}
	if err != nil {
		return &ParseError{Where: where, Field: "pattern", Message: err.Error()}
	}
	res.Indicators = append(res.Indicators, inds...)
	return nil
}

// stixUsable checks an indicator's required fields and validity. It returns
// a skip reason for a well-formed indicator that must not be used now.
func stixUsable(obj *stixObject, now time.Time) (string, *ParseError) {
	switch {
	case obj.Pattern == nil:
		return "", &ParseError{Field: "pattern", Message: "missing"}
	case obj.PatternType == "":
		return "", &ParseError{Field: "pattern_type", Message: "missing"}
	case obj.Confidence != nil && (*obj.Confidence < 0 || *obj.Confidence > 100):
		return "", &ParseError{Field: "confidence", Message: fmt.Sprintf("%d is not 0-100", *obj.Confidence)}
	}
	from, perr := stixTime("valid_from", obj.ValidFrom)
	if perr != nil {
		return "", perr
	}
	until, perr := stixTime("valid_until", obj.ValidUntil)
	if perr != nil {
		return "", perr
	}

	switch {
	case obj.Revoked:
		return "revoked", nil
	case obj.PatternType != "stix":
		return fmt.Sprintf("pattern_type %q", obj.PatternType), nil
	case !until.IsZero() && !until.After(now):
		return "expired at " + obj.ValidUntil, nil
	case !from.IsZero() && from.After(now):
		return "not valid before " + obj.ValidFrom, nil
	}
	return "", nil
}

// stixTime parses an optional STIX timestamp.
func stixTime(field, s string) (time.Time, *ParseError) {
	if s == "" {
		return time.Time{}, nil
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, &ParseError{Field: field, Message: fmt.Sprintf("%q is not an RFC 3339 timestamp", s)}
	}
	return t, nil
}

// stixIndicators turns a supported pattern into indicators.
func stixIndicators(obj *stixObject, feed string) ([]policy.Indicator, error) {
	cmps, err := parsePattern(*obj.Pattern)
	if err != nil {
		return nil, err
	}
	confidence := DefaultConfidence
	if obj.Confidence != nil {
		confidence = *obj.Confidence
	}

	inds := make([]policy.Indicator, 0, len(cmps))
	for _, c := range cmps {
		ind, err := comparisonIndicator(c, confidence, obj.ID, feed)
		if err != nil {
			return nil, err
		}
		inds = append(inds, ind)
	}
	return inds, nil
}

// comparisonIndicator validates the value of one comparison.
func comparisonIndicator(c comparison, confidence int, id, feed string) (policy.Indicator, error) {
	if c.path == pathSHA256 {
		sum, err := parseSHA256(c.value)
		return hashIndicator(sum, confidence, id, feed), err
	}
	family := 4
	if c.path == pathIPv6 {
		family = 6
	}
	p, err := parsePrefix(c.value, family)
	return ipIndicator(p, confidence, id, feed), err
}

// jsonError turns a JSON decoding error into a ParseError with a line
// number or a field.
func jsonError(source, where string, data []byte, err error) *ParseError {
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &syn):
		line := 1 + bytes.Count(data[:min(int(syn.Offset), len(data))], []byte("\n"))
		if where == "" {
			where = fmt.Sprintf("line %d", line)
		}
		return &ParseError{Source: source, Where: where, Message: syn.Error()}
	case errors.As(err, &typ):
		return &ParseError{Source: source, Where: where, Field: typ.Field,
			Message: fmt.Sprintf("%s is not a %s", typ.Value, typ.Type)}
	}
	return &ParseError{Source: source, Where: where, Message: err.Error()}
}
