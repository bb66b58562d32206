// Package metrics defines the server's Prometheus metrics and serves them.
// server/api updates them; cmd/vigil-server exposes them on --metrics. A
// Metrics value owns its registry and nothing else.
package metrics

import (
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	vigilpb "github.com/vigilsec/vigil/gen/vigil/v1"
)

// Metrics holds the server's collectors. Its methods are safe for concurrent
// use; a nil *Metrics ignores every update, for tests that need none.
type Metrics struct {
	reg          *prometheus.Registry
	events       *prometheus.CounterVec
	duplicates   prometheus.Counter
	online       prometheus.Gauge
	streams      *prometheus.CounterVec
	ackLatency   prometheus.Histogram
	tablePushes  *prometheus.CounterVec
	instructions *prometheus.CounterVec
}

// New creates the collectors in a fresh registry, with the Go and process
// collectors.
func New() *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		events: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "vigil_server_events_stored_total", Help: "Events stored, by kind.",
		}, []string{"kind"}),
		duplicates: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "vigil_server_events_duplicate_total", Help: "Replayed agent events skipped as already stored.",
		}),
		online: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "vigil_server_agents_online", Help: "Agents with an open stream.",
		}),
		streams: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "vigil_server_streams_closed_total", Help: "Agent streams closed, by reason.",
		}, []string{"reason"}),
		ackLatency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "vigil_server_instruction_ack_seconds",
			Help:    "Time from issuing an instruction to its acknowledgement.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
		}),
		tablePushes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "vigil_server_table_pushes_total", Help: "Verdict tables and diffs pushed to agents.",
		}, []string{"type"}),
		instructions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "vigil_server_instructions_total", Help: "Instructions issued, by kind.",
		}, []string{"kind"}),
	}
	m.reg.MustRegister(m.events, m.duplicates, m.online, m.streams, m.ackLatency,
		m.tablePushes, m.instructions,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Handler serves the registry in the Prometheus text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
}

// EventStored counts one stored event.
func (m *Metrics) EventStored(kind vigilpb.EventKind) {
	if m != nil {
		m.events.WithLabelValues(kind.String()).Inc()
	}
}

// Duplicates counts replayed events that were skipped.
func (m *Metrics) Duplicates(n int) {
	if m != nil {
		m.duplicates.Add(float64(n))
	}
}

// StreamOpened counts an agent coming online.
func (m *Metrics) StreamOpened() {
	if m != nil {
		m.online.Inc()
	}
}

// StreamClosed counts an agent going offline, with a short reason label.
func (m *Metrics) StreamClosed(reason string) {
	if m != nil {
		m.online.Dec()
		m.streams.WithLabelValues(reason).Inc()
	}
}

// InstructionIssued counts an instruction of a kind.
func (m *Metrics) InstructionIssued(kind vigilpb.InstructionKind) {
	if m != nil {
		m.instructions.WithLabelValues(kind.String()).Inc()
	}
}

// InstructionAcked observes the time from issue to acknowledgement.
func (m *Metrics) InstructionAcked(d time.Duration) {
	if m != nil {
		m.ackLatency.Observe(d.Seconds())
	}
}

// TablePushed counts a full table ("full") or a diff ("diff") sent.
func (m *Metrics) TablePushed(kind string) {
	if m != nil {
		m.tablePushes.WithLabelValues(kind).Inc()
	}
}

// Registerer returns the registry the metrics are served from, for the
// collectors of other server parts (integrations) to join.
func (m *Metrics) Registerer() prometheus.Registerer {
	return m.reg
}
