package metrics

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
)

func TestServeExposesMetrics(t *testing.T) {
	m := New()
	m.Events.WithLabelValues("exec").Add(3)
	m.SetStreamState("online", "connecting", "online", "backoff")
	m.SpoolBytes.Set(4096)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	addr, err := m.Serve(ctx, "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.Get("http://" + addr.String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)

	for _, want := range []string{
		`vigil_agent_events_total{kind="exec"} 3`,
		`vigil_agent_stream_state{state="online"} 1`,
		`vigil_agent_stream_state{state="backoff"} 0`,
		`vigil_agent_spool_bytes 4096`,
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("metrics lack %q", want)
		}
	}
}
