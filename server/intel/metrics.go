package intel

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Metric descriptions of the feed collector.
var (
	descIndicators = prometheus.NewDesc("vigil_intel_feed_indicators",
		"Indicators in force from each threat-intel feed.", []string{"feed"}, nil)
	descSkipped = prometheus.NewDesc("vigil_intel_feed_skipped",
		"Entries the last successful load of each feed skipped as unsupported.", []string{"feed"}, nil)
	descLoaded = prometheus.NewDesc("vigil_intel_feed_last_success_timestamp_seconds",
		"Unix time of each feed's last successful load (0: none yet).", []string{"feed"}, nil)
	descFailing = prometheus.NewDesc("vigil_intel_feed_failing",
		"1 when a feed's last load failed and its previous indicators are kept, else 0.", []string{"feed"}, nil)
)

// collector exports a Manager's feed status.
type collector struct{ m *Manager }

// Collector returns a Prometheus collector reporting each feed's indicators,
// skipped entries, last successful load and whether its last load failed. It
// reads Status at each scrape.
func (m *Manager) Collector() prometheus.Collector { return collector{m} }

func (c collector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descIndicators
	ch <- descSkipped
	ch <- descLoaded
	ch <- descFailing
}

func (c collector) Collect(ch chan<- prometheus.Metric) {
	for _, st := range c.m.Status() {
		var loaded, failing float64
		if !st.Loaded.IsZero() {
			loaded = float64(st.Loaded.UnixNano()) / 1e9
		}
		if st.Err != nil {
			failing = 1
		}
		ch <- prometheus.MustNewConstMetric(descIndicators, prometheus.GaugeValue, float64(st.Indicators), st.Name)
		ch <- prometheus.MustNewConstMetric(descSkipped, prometheus.GaugeValue, float64(st.Skipped), st.Name)
		ch <- prometheus.MustNewConstMetric(descLoaded, prometheus.GaugeValue, loaded, st.Name)
		ch <- prometheus.MustNewConstMetric(descFailing, prometheus.GaugeValue, failing, st.Name)
	}
}
