package api

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"

	vigilpb "github.com/vigilsec/vigil/gen/vigil/v1"
	"github.com/vigilsec/vigil/server/pki"
)

func addrs(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("10.%d.%d.1", i/250, i%250)
	}
	return out
}

// TestHelloBounds checks that a hello with too many addresses, or one that
// does not parse, is refused, first on the stream and again later.
func TestHelloBounds(t *testing.T) {
	ts := runServer(t, t.TempDir())
	cert := ts.enroll(t, "svc")
	tests := []struct {
		name  string
		addrs []string
		want  codes.Code
	}{
		{name: "at the bound", addrs: addrs(maxHelloAddresses), want: codes.OK},
		{name: "with prefix lengths", addrs: []string{"10.0.0.1/24", "fd00::1/64"}, want: codes.OK},
		{name: "over the bound", addrs: addrs(maxHelloAddresses + 1), want: codes.InvalidArgument},
		{name: "unparsable", addrs: []string{"10.0.0.1", "host.example"}, want: codes.InvalidArgument},
	}
	for _, tt := range tests {
		t.Run(tt.name+" first", func(t *testing.T) {
			a := ts.connectWith(t, cert, &vigilpb.Hello{Name: "svc", Addresses: tt.addrs})
			if tt.want == codes.OK {
				if a.next(t).GetTable() == nil {
					t.Fatal("first server message is not the full table")
				}
				return
			}
			wantCode(t, a.end(t), tt.want)
		})
		t.Run(tt.name+" again", func(t *testing.T) {
			a := ts.connect(t, cert, "svc")
			a.next(t) // table
			a.send(t, &vigilpb.AgentMessage{Body: &vigilpb.AgentMessage_Hello{
				Hello: &vigilpb.Hello{Name: "svc", Addresses: tt.addrs}}})
			if tt.want == codes.OK {
				if a.next(t).GetTable() == nil {
					t.Fatal("a second hello got no full table")
				}
				return
			}
			wantCode(t, a.end(t), tt.want)
		})
	}
}

// TestPostureClamped checks that an agent's posture reaches the listing cut
// to its bounds, whether it came in the hello or later.
func TestPostureClamped(t *testing.T) {
	ts := runServer(t, t.TempDir())
	big := func() *vigilpb.Posture {
		return &vigilpb.Posture{Hostname: strings.Repeat("h", 10000), ProcessNames: addrs(20000),
			Users: []string{strings.Repeat("é", 1000)}}
	}
	a := ts.connectWith(t, ts.enroll(t, "dev"), &vigilpb.Hello{Name: "dev", Posture: big()})
	a.next(t) // table
	checkListedPosture(t, ts)

	a.send(t, &vigilpb.AgentMessage{Body: &vigilpb.AgentMessage_Posture{Posture: big()}})
	a.send(t, batch(1)) // its ack shows the posture was handled
	if a.next(t).GetEventsAck() == nil {
		t.Fatal("no events ack")
	}
	checkListedPosture(t, ts)
}

func checkListedPosture(t *testing.T, ts *testServer) {
	t.Helper()
	resp, err := ts.admin(t, pki.RoleViewer).ListAgents(context.Background(), &vigilpb.ListAgentsRequest{})
	if err != nil || len(resp.GetAgents()) != 1 {
		t.Fatalf("list agents: %v err %v", resp, err)
	}
	p := resp.Agents[0].GetPosture()
	if len(p.GetProcessNames()) != maxPostureList || len(p.GetHostname()) != maxPostureString ||
		len(p.GetUsers()[0]) > maxPostureString {
		t.Errorf("listed posture has %d process names, hostname of %d bytes, user of %d bytes",
			len(p.GetProcessNames()), len(p.GetHostname()), len(p.GetUsers()[0]))
	}
}

// TestSecondHelloNamesAnother checks that a later hello naming another
// agent is refused like a first one.
func TestSecondHelloNamesAnother(t *testing.T) {
	ts := runServer(t, t.TempDir())
	ts.enroll(t, "victim")
	a := ts.connect(t, ts.enroll(t, "laptop"), "laptop")
	a.next(t) // table
	a.send(t, &vigilpb.AgentMessage{Body: &vigilpb.AgentMessage_Hello{
		Hello: &vigilpb.Hello{Name: "victim", Addresses: []string{"10.9.9.9"}}}})
	wantCode(t, a.end(t), codes.PermissionDenied)
	ts.engine.mu.Lock()
	defer ts.engine.mu.Unlock()
	if len(ts.engine.online) != 1 {
		t.Errorf("engine saw hellos of %v, want only laptop's first", ts.engine.online)
	}
}
