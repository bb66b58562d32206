package intel

import (
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/vigilsec/vigil/policy"
)

// ParseCSV reads a CSV feed: one indicator per record with the columns type,
// value and an optional confidence (0-100), an optional header whose first
// column is "type", and "#" comment lines. Types are ipv4, ipv6, cidr and
// sha256; other types are skipped. source names the file or URL in errors,
// feed becomes each indicator's Source, and ID is "line N".
func ParseCSV(r io.Reader, source, feed string) (*Result, error) {
	cr := csv.NewReader(r)
	cr.Comment = '#'
	cr.FieldsPerRecord = -1
	cr.TrimLeadingSpace = true
	cr.ReuseRecord = true

	res := &Result{}
	for first := true; ; first = false {
		rec, err := cr.Read()
		if errors.Is(err, io.EOF) {
			return res, nil
		}
		if err != nil {
			return nil, csvSyntaxError(source, err)
		}
		line, _ := cr.FieldPos(0)
		if first && strings.EqualFold(strings.TrimSpace(rec[0]), "type") {
			continue
		}
		if err := parseCSVRecord(res, rec, line, feed); err != nil {
			err.Source = source
			return nil, err
		}
	}
}

// csvSyntaxError turns an encoding/csv error into a ParseError.
func csvSyntaxError(source string, err error) error {
	var pe *csv.ParseError
	if errors.As(err, &pe) {
		return &ParseError{
			Source: source, Where: fmt.Sprintf("line %d", pe.Line), Message: pe.Err.Error(),
		}
	}
	return &ParseError{Source: source, Message: err.Error()}
}

// parseCSVRecord appends the record's indicator to res, or a skip.
func parseCSVRecord(res *Result, rec []string, line int, feed string) *ParseError {
	where := fmt.Sprintf("line %d", line)
	if len(rec) < 2 || len(rec) > 3 {
		return &ParseError{Where: where,
			Message: fmt.Sprintf("%d columns, want type,value[,confidence]", len(rec))}
	}
	confidence, perr := csvConfidence(rec)
	if perr != nil {
		perr.Where = where
		return perr
	}

	kind := strings.ToLower(strings.TrimSpace(rec[0]))
	value := strings.TrimSpace(rec[1])
	ind, err := csvIndicator(kind, value)
	if errors.Is(err, errUnsupportedType) {
		res.Skipped = append(res.Skipped, Skip{Where: where, Reason: err.Error()})
		return nil
	}
	if err != nil {
		return &ParseError{Where: where, Field: "value", Message: err.Error()}
	}
	ind.Confidence, ind.ID, ind.Source = confidence, where, feed
	res.Indicators = append(res.Indicators, ind)
	return nil
}

// errUnsupportedType marks a CSV type the parser skips.
var errUnsupportedType = errors.New("unsupported type")

// csvIndicator parses value according to kind.
func csvIndicator(kind, value string) (policy.Indicator, error) {
	var err error
	ind := policy.Indicator{Kind: policy.IndicatorIP}
	switch kind {
	case "ipv4":
		ind.Prefix, err = parseAddress(value, 4)
	case "ipv6":
		ind.Prefix, err = parseAddress(value, 6)
	case "cidr":
		ind.Prefix, err = parsePrefix(value, 0)
	case "sha256":
		ind = policy.Indicator{Kind: policy.IndicatorSHA256}
		ind.SHA256, err = parseSHA256(value)
	default:
		err = fmt.Errorf("%w %q", errUnsupportedType, kind)
	}
	return ind, err
}

// csvConfidence reads the optional third column.
func csvConfidence(rec []string) (int, *ParseError) {
	if len(rec) < 3 || strings.TrimSpace(rec[2]) == "" {
		return DefaultConfidence, nil
	}
	s := strings.TrimSpace(rec[2])
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 || n > 100 {
		return 0, &ParseError{Field: "confidence", Message: fmt.Sprintf("%q is not an integer 0-100", s)}
	}
	return n, nil
}
