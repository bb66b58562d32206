package api

import (
	"context"
	"math"
	"testing"

	vigilpb "github.com/vigilsec/vigil/gen/vigil/v1"
	"github.com/vigilsec/vigil/server/pki"
)

// TestTableAckNeverSent checks that an ack for a table version the stream
// never carried changes neither the listing nor the engine, while an ack
// for the version sent does.
func TestTableAckNeverSent(t *testing.T) {
	ts := runServer(t, t.TempDir())
	a := ts.connect(t, ts.enroll(t, "laptop"), "laptop")
	sent := a.next(t).GetTable().GetVersion()
	tests := []struct {
		name    string
		version uint64
		want    uint64
	}{
		{name: "forged", version: math.MaxUint64, want: 0},
		{name: "before any sent", version: sent - 1, want: 0},
		{name: "sent", version: sent, want: sent},
		{name: "forged after one sent", version: sent + 1, want: sent},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a.send(t, &vigilpb.AgentMessage{Body: &vigilpb.AgentMessage_TableAck{
				TableAck: &vigilpb.TableAck{Version: tt.version}}})
			a.send(t, batch(uint64(i+1))) // its ack shows the table ack was handled
			a.next(t)
			resp, err := ts.admin(t, pki.RoleViewer).ListAgents(context.Background(), &vigilpb.ListAgentsRequest{})
			if err != nil {
				t.Fatal(err)
			}
			ts.engine.mu.Lock()
			engine := ts.engine.acked["laptop"]
			ts.engine.mu.Unlock()
			if got := resp.Agents[0].GetTableVersion(); got != tt.want || engine != tt.want {
				t.Errorf("listed table %d, engine saw %d; want %d", got, engine, tt.want)
			}
		})
	}
}
