package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"math"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
)

// Status of a result row against its target.
const (
	StatusPass        = "pass"
	StatusFail        = "FAIL"
	StatusInfo        = "-"           // no target
	StatusUnavailable = "unavailable" // the variant could not run; Note says why
)

// Target is an upper or lower bound on a row's ratio or value.
type Target struct {
	OnRatio bool    // bound the ratio, else the value
	Max     bool    // value or ratio must be <= Bound, else >= Bound
	Bound   float64 // the limit
}

// String shows the target as the table prints it ("<= 1.02x", ">= 200000");
// a nil Target is "".
func (t *Target) String() string {
	if t == nil {
		return ""
	}
	op := ">="
	if t.Max {
		op = "<="
	}
	if t.OnRatio {
		return fmt.Sprintf("%s %gx", op, t.Bound)
	}
	return fmt.Sprintf("%s %g", op, t.Bound)
}

// Row is one measured figure.
type Row struct {
	Scenario string  `json:"scenario"`
	Variant  string  `json:"variant"`
	Metric   string  `json:"metric"`
	Value    float64 `json:"value"`
	Unit     string  `json:"unit"`
	Baseline string  `json:"baseline,omitempty"` // variant the ratio divides by
	Ratio    float64 `json:"ratio,omitempty"`    // Value / baseline's Value; 0 without a baseline
	Target   *Target `json:"-"`
	Goal     string  `json:"target,omitempty"`
	Status   string  `json:"status"`
	Samples  int     `json:"samples,omitempty"` // samples behind a median
	Note     string  `json:"note,omitempty"`
}

// judge fills Goal and Status from Target.
func (r *Row) judge() {
	if r.Status == StatusUnavailable {
		return
	}
	r.Goal = r.Target.String()
	if r.Target != nil && !r.Target.OnRatio {
		r.Goal = strings.TrimSpace(r.Goal + " " + r.Unit)
	}
	if r.Target == nil {
		r.Status = StatusInfo
		return
	}
	v := r.Value
	if r.Target.OnRatio {
		v = r.Ratio
	}
	ok := v >= r.Target.Bound
	if r.Target.Max {
		ok = v <= r.Target.Bound
	}
	r.Status = StatusFail
	if ok {
		r.Status = StatusPass
	}
}

// Report collects the rows of a run and what the machine was doing.
type Report struct {
	Machine map[string]string `json:"machine,omitempty"` // CPUs, kernel, load averages
	Rows    []Row             `json:"rows"`
}

// Note records a fact about the machine or the run, printed above the table.
func (rep *Report) Note(key, value string) {
	if rep.Machine == nil {
		rep.Machine = map[string]string{}
	}
	rep.Machine[key] = value
}

// Add judges r and appends it.
func (rep *Report) Add(r Row) {
	r.judge()
	rep.Rows = append(rep.Rows, r)
}

// Unavailable records that a variant could not run, and why.
func (rep *Report) Unavailable(scenario, variant, metric, why string) {
	rep.Add(Row{Scenario: scenario, Variant: variant, Metric: metric,
		Status: StatusUnavailable, Note: why})
}

// Failed reports whether any row missed its target.
func (rep *Report) Failed() bool {
	return slices.ContainsFunc(rep.Rows, func(r Row) bool { return r.Status == StatusFail })
}

// WriteTable prints the machine notes and the rows as an aligned table.
func (rep *Report) WriteTable(w io.Writer) error {
	for _, k := range slices.Sorted(maps.Keys(rep.Machine)) {
		fmt.Fprintf(w, "%s: %s\n", k, rep.Machine[k])
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "SCENARIO\tVARIANT\tMETRIC\tVALUE\tRATIO\tTARGET\tRESULT")
	for _, r := range rep.Rows {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.Scenario, r.Variant, r.Metric,
			value(r), ratio(r), r.Goal, status(r))
	}
	return tw.Flush()
}

// WriteMarkdown prints the rows as a Markdown table (for the README).
func (rep *Report) WriteMarkdown(w io.Writer) {
	fmt.Fprintln(w, "| scenario | variant | metric | value | ratio | target | result |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|---|")
	for _, r := range rep.Rows {
		fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %s | %s |\n", r.Scenario, r.Variant, r.Metric,
			value(r), ratio(r), r.Goal, status(r))
	}
}

// WriteJSON writes the rows to path.
func (rep *Report) WriteJSON(path string) error {
	b, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return fmt.Errorf("encode results: %w", err)
	}
	if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("write results: %w", err)
	}
	return nil
}

func value(r Row) string {
	if r.Status == StatusUnavailable {
		return "n/a"
	}
	return strings.TrimSpace(formatNum(r.Value) + " " + r.Unit)
}

func ratio(r Row) string {
	if r.Baseline == "" || r.Ratio == 0 {
		return ""
	}
	return fmt.Sprintf("%.3fx %s", r.Ratio, r.Baseline)
}

func status(r Row) string {
	if r.Note == "" {
		return r.Status
	}
	return r.Status + " (" + r.Note + ")"
}

// formatNum prints v with three significant digits, without exponent.
func formatNum(v float64) string {
	a := math.Abs(v)
	switch {
	case a >= 100:
		return fmt.Sprintf("%.0f", v)
	case a >= 10:
		return fmt.Sprintf("%.1f", v)
	case a >= 1:
		return fmt.Sprintf("%.2f", v)
	}
	return fmt.Sprintf("%.3g", v)
}

// median of xs; NaN when empty.
func median(xs []float64) float64 {
	return percentile(xs, 50)
}

// percentile p (0-100) of xs by nearest rank; NaN when empty.
func percentile(xs []float64, p float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	xs = slices.Sorted(slices.Values(xs))
	rank := int(math.Ceil(p / 100 * float64(len(xs))))
	return xs[max(rank-1, 0)]
}

// samples keeps the samples of each variant of a scenario.
type samples map[string][]float64

func (s samples) add(variant string, v float64) { s[variant] = append(s[variant], v) }

// ratioRow makes a row of the median of variant. Its ratio to base is the
// median of the ratios of samples taken in the same round, when both have
// one per round, else the ratio of the medians.
func (s samples) ratioRow(scenario, variant, base, metric, unit string, t *Target) Row {
	v, b := s[variant], s[base]
	r := Row{Scenario: scenario, Variant: variant, Metric: metric, Value: median(v), Unit: unit,
		Samples: len(v), Target: t}
	if base == "" || base == variant || len(b) == 0 || len(v) == 0 {
		return r
	}
	r.Baseline, r.Ratio = base, r.Value/median(b)
	if len(b) == len(v) {
		paired := make([]float64, len(v))
		for i := range v {
			paired[i] = v[i] / b[i]
		}
		r.Ratio = median(paired)
	}
	return r
}

func sortedKeys[V any](m map[string]V) []string {
	return slices.Sorted(maps.Keys(m))
}
