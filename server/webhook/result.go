package webhook

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	vigilpb "github.com/vigilsec/vigil/gen/vigil/v1"
)

// Result is one external result, as posted in JSON.
type Result struct {
	Entity     string `json:"entity"`                // KIND/NAME, e.g. "device/laptop-7"
	Level      string `json:"level,omitempty"`       // the level the result sets, if any
	Severity   string `json:"severity"`              // info, low, medium, high, critical
	Source     string `json:"source"`                // the reporting system
	Reason     string `json:"reason"`                // one sentence
	TTLSeconds uint64 `json:"ttl_seconds,omitempty"` // 0: in force until replaced
}

// entityKinds are the entity kinds a result may name.
var entityKinds = map[string]bool{"user": true, "device": true, "service": true, "process": true}

// severities are the accepted severities.
var severities = map[string]bool{"info": true, "low": true, "medium": true, "high": true, "critical": true}

// DecodeResults parses a body holding one result object or a list of them
// (at most max), rejecting unknown fields and naming the offending index and
// field in errors.
func DecodeResults(body []byte, max int) ([]Result, error) {
	trimmed := bytes.TrimLeft(body, " \t\r\n")
	if len(trimmed) == 0 {
		return nil, errors.New("empty body, want a result object or a list")
	}
	var results []Result
	if trimmed[0] == '[' {
		if err := decodeStrict(trimmed, &results); err != nil {
			return nil, fmt.Errorf("decode results: %w", err)
		}
	} else {
		var one Result
		if err := decodeStrict(trimmed, &one); err != nil {
			return nil, fmt.Errorf("decode result: %w", err)
		}
		results = []Result{one}
	}

	if len(results) == 0 || len(results) > max {
		return nil, fmt.Errorf("%d results, want 1 to %d", len(results), max)
	}
	for i := range results {
		if err := results[i].validate(); err != nil {
			return nil, fmt.Errorf("results[%d]: %w", i, err)
		}
	}
	return results, nil
}

// decodeStrict decodes exactly one JSON value with no unknown fields.
func decodeStrict(data []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.More() {
		return errors.New("trailing data after the JSON value")
	}
	return nil
}

// validate checks a result's fields.
func (r *Result) validate() error {
	kind, name, ok := strings.Cut(r.Entity, "/")
	switch {
	case !ok || !entityKinds[kind] || name == "":
		return fmt.Errorf("entity: %q is not KIND/NAME with KIND user, device, service or process", r.Entity)
	case !severities[r.Severity]:
		return fmt.Errorf("severity: %q is not info, low, medium, high or critical", r.Severity)
	case strings.TrimSpace(r.Source) == "":
		return errors.New("source: missing")
	case strings.TrimSpace(r.Reason) == "":
		return errors.New("reason: missing")
	case len(r.Entity) > 512 || len(r.Source) > 256 || len(r.Reason) > 4096 || len(r.Level) > 64:
		return errors.New("a field is too long (entity 512, source 256, reason 4096, level 64 bytes)")
	}
	return nil
}

// request converts the result for the engine.
func (r *Result) request() *vigilpb.ReportRequest {
	return &vigilpb.ReportRequest{
		Entity: r.Entity, Level: r.Level, Severity: r.Severity,
		Source: r.Source, Reason: r.Reason, TtlSeconds: r.TTLSeconds,
	}
}
