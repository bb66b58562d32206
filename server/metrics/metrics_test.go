package metrics

import (
	"io"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	vigilpb "github.com/vigilsec/vigil/gen/vigil/v1"
)

func TestExposition(t *testing.T) {
	m := New()
	m.StreamOpened()
	m.StreamOpened()
	m.StreamClosed("revoked")
	m.EventStored(vigilpb.EventKind_EVENT_KIND_EXEC)
	m.InstructionAcked(3 * time.Millisecond)
	m.TablePushed("full")

	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	body, _ := io.ReadAll(rec.Body)
	tests := []struct {
		name string
		line string
	}{
		{name: "agents online", line: "vigil_server_agents_online 1"},
		{name: "closed by reason", line: `vigil_server_streams_closed_total{reason="revoked"} 1`},
		{name: "events by kind", line: `vigil_server_events_stored_total{kind="EVENT_KIND_EXEC"} 1`},
		{name: "ack latency", line: "vigil_server_instruction_ack_seconds_count 1"},
		{name: "table pushes", line: `vigil_server_table_pushes_total{type="full"} 1`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if !strings.Contains(string(body), tt.line+"\n") {
				t.Fatalf("exposition lacks %q", tt.line)
			}
		})
	}
}

func TestNilIgnoresUpdates(t *testing.T) {
	var m *Metrics
	m.StreamOpened()
	m.EventStored(vigilpb.EventKind_EVENT_KIND_EXEC)
	m.InstructionAcked(time.Second)
}
