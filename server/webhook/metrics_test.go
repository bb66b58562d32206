package webhook

import (
	"io"
	"log/slog"
	"maps"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

func TestHandlerCountsRequests(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	h, err := NewHandler(secret, &fakeEngine{}, slog.New(slog.NewTextHandler(io.Discard, nil)),
		Options{Now: func() time.Time { return now }, Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	list := `[` + oneResult + `,` + oneResult + `]`
	h.ServeHTTP(httptest.NewRecorder(), signed(list, now.Unix()))
	h.ServeHTTP(httptest.NewRecorder(), signed(list, now.Unix()))   // replay
	h.ServeHTTP(httptest.NewRecorder(), signed(list, now.Unix()-1)) // new signature
	h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("POST", "/", nil))

	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, fam := range families {
		for _, m := range fam.GetMetric() {
			key := fam.GetName()
			for _, l := range m.GetLabel() {
				key += "/" + l.GetValue()
			}
			got[key] = m.GetCounter().GetValue()
		}
	}
	want := map[string]float64{
		"vigil_webhook_requests_total/200": 2,
		"vigil_webhook_requests_total/401": 1,
		"vigil_webhook_requests_total/409": 1,
		"vigil_webhook_results_total":      4,
	}
	if !maps.Equal(got, want) {
		t.Fatalf("counters %v, want %v", got, want)
	}

	// A second handler on the same registry is refused, not silently split.
	if _, err := NewHandler(secret, &fakeEngine{}, slog.Default(), Options{Registerer: reg}); err == nil {
		t.Fatal("second handler registered the same metrics")
	}
}
