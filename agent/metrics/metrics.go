// Package metrics defines the agent's Prometheus metrics and serves them over
// HTTP when the operator asks for it (--metrics ADDR). The agent's run
// function creates one Metrics, updates it from its loops, and owns the HTTP
// server Serve starts.
package metrics

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Metrics are the agent's metrics, registered in their own registry. The
// Prometheus types are safe for concurrent use.
type Metrics struct {
	Registry *prometheus.Registry

	Events       *prometheus.CounterVec // observed events by kind
	KernelLost   prometheus.Gauge       // events the kernel could not deliver (ring buffer full)
	KernelEvents prometheus.Gauge       // events the kernel emitted
	Verdicts     *prometheus.GaugeVec   // kernel verdicts by reason, cumulative
	Instructions *prometheus.CounterVec // instructions by outcome
	TableRules   *prometheus.GaugeVec   // rules in the server's table by kind
	TableVersion prometheus.Gauge       // version of the table enforced
	StreamState  *prometheus.GaugeVec   // 1 for the stream's current state
	SpoolBytes   prometheus.Gauge       // bytes in the on-disk spool
	SpoolPending prometheus.Gauge       // events spooled and not acknowledged
	SpoolDropped prometheus.Gauge       // events dropped because the spool was full
}

// New creates and registers the agent's metrics.
func New() *Metrics {
	m := &Metrics{
		Registry:     prometheus.NewRegistry(),
		Events:       prometheus.NewCounterVec(opts("events_total", "Events observed, by kind."), []string{"kind"}),
		KernelLost:   prometheus.NewGauge(gopts("kernel_events_lost", "Events the kernel could not deliver because the ring buffer was full.")),
		KernelEvents: prometheus.NewGauge(gopts("kernel_events_emitted", "Events the kernel emitted.")),
		Verdicts:     prometheus.NewGaugeVec(gopts("verdicts", "Kernel verdicts by reason, since the programs were loaded."), []string{"reason"}),
		Instructions: prometheus.NewCounterVec(opts("instructions_total", "Instructions executed, by outcome."), []string{"outcome"}),
		TableRules:   prometheus.NewGaugeVec(gopts("table_entries", "Entries in the verdict table, by kind."), []string{"kind"}),
		TableVersion: prometheus.NewGauge(gopts("table_version", "Version of the verdict table enforced.")),
		StreamState:  prometheus.NewGaugeVec(gopts("stream_state", "1 for the server stream's current state."), []string{"state"}),
		SpoolBytes:   prometheus.NewGauge(gopts("spool_bytes", "Bytes in the on-disk event spool.")),
		SpoolPending: prometheus.NewGauge(gopts("spool_pending_events", "Events spooled and not yet acknowledged by the server.")),
		SpoolDropped: prometheus.NewGauge(gopts("spool_dropped_events", "Events dropped because the spool reached its size limit.")),
	}
	m.Registry.MustRegister(m.Events, m.KernelLost, m.KernelEvents, m.Verdicts, m.Instructions,
		m.TableRules, m.TableVersion, m.StreamState, m.SpoolBytes, m.SpoolPending, m.SpoolDropped)
	return m
}

// SetStreamState marks state as the current one among states.
func (m *Metrics) SetStreamState(state string, states ...string) {
	for _, s := range states {
		v := 0.0
		if s == state {
			v = 1
		}
		m.StreamState.WithLabelValues(s).Set(v)
	}
}

// Serve listens on addr and serves /metrics until ctx ends. It returns once
// the listener is open; errors after that end the server silently.
func (m *Metrics) Serve(ctx context.Context, addr string) (net.Addr, error) {
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen metrics %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{}))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}

	go func() {
		<-ctx.Done()
		srv.Close()
	}()
	go func() {
		if err := srv.Serve(lis); err != nil && !errors.Is(err, http.ErrServerClosed) {
			lis.Close()
		}
	}()
	return lis.Addr(), nil
}

func opts(name, help string) prometheus.CounterOpts {
	return prometheus.CounterOpts{Namespace: "vigil", Subsystem: "agent", Name: name, Help: help}
}

func gopts(name, help string) prometheus.GaugeOpts {
	return prometheus.GaugeOpts{Namespace: "vigil", Subsystem: "agent", Name: name, Help: help}
}
