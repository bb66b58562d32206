package intel

import (
	"context"
	"maps"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

func TestCollectorReportsFeedStatus(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.csv")
	writeFile(t, good, "ipv4,192.0.2.1,90\nipv4,192.0.2.2,90\nurl,http://x.example/,50\n")
	feeds := []Feed{{Name: "good", Location: good}, {Name: "missing", Location: filepath.Join(dir, "none.csv")}}
	loaded := time.Unix(1700000000, 0)
	m, err := NewManager(feeds, newRecorder(), discard(), Options{Now: func() time.Time { return loaded }})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Reload(context.Background(), "good"); err != nil {
		t.Fatal(err)
	}
	if err := m.Reload(context.Background(), "missing"); err == nil {
		t.Fatal("a missing feed file loaded")
	}

	got := gather(t, m)
	want := map[string]float64{
		"vigil_intel_feed_indicators/good":                        2,
		"vigil_intel_feed_indicators/missing":                     0,
		"vigil_intel_feed_skipped/good":                           1,
		"vigil_intel_feed_skipped/missing":                        0,
		"vigil_intel_feed_last_success_timestamp_seconds/good":    1.7e9,
		"vigil_intel_feed_last_success_timestamp_seconds/missing": 0,
		"vigil_intel_feed_failing/good":                           0,
		"vigil_intel_feed_failing/missing":                        1,
	}
	if !maps.Equal(got, want) {
		t.Fatalf("gathered %v, want %v", got, want)
	}
}

// gather registers m's collector on a fresh registry and returns each
// sample as "NAME/FEED" → value.
func gather(t *testing.T, m *Manager) map[string]float64 {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(m.Collector())
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, fam := range families {
		for _, mt := range fam.GetMetric() {
			out[fam.GetName()+"/"+mt.GetLabel()[0].GetValue()] = mt.GetGauge().GetValue()
		}
	}
	return out
}
