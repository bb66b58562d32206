package api

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	vigilpb "github.com/vigilsec/vigil/gen/vigil/v1"
	"github.com/vigilsec/vigil/server/pki"
)

func drain(s *session) []string {
	var out []string
	for len(s.queue) > 0 {
		switch m := (<-s.queue).GetBody().(type) {
		case *vigilpb.ServerMessage_Table:
			out = append(out, fmt.Sprintf("table %d", m.Table.GetVersion()))
		case *vigilpb.ServerMessage_Diff:
			out = append(out, fmt.Sprintf("diff %d", m.Diff.GetVersion()))
		}
	}
	return out
}

func TestSessionTableOrdering(t *testing.T) {
	diff := func(v uint64) *vigilpb.TableDiff { return &vigilpb.TableDiff{BaseVersion: v - 1, Version: v} }
	tests := []struct {
		name string
		run  func(s *session)
		want string
	}{
		{name: "diffs wait for the table", run: func(s *session) {
			s.holdDiffs()
			s.pushDiff(diff(5))
			s.pushDiff(diff(6))
			s.sendTable(&vigilpb.VerdictTable{Version: 5})
		}, want: "[table 5 diff 6]"},
		{name: "stale diffs are dropped", run: func(s *session) {
			s.holdDiffs()
			s.sendTable(&vigilpb.VerdictTable{Version: 3})
			s.pushDiff(diff(3))
			s.pushDiff(diff(4))
		}, want: "[table 3 diff 4]"},
		{name: "a second hello holds diffs again", run: func(s *session) {
			s.holdDiffs()
			s.sendTable(&vigilpb.VerdictTable{Version: 1})
			s.holdDiffs()
			s.pushDiff(diff(2))
			s.sendTable(&vigilpb.VerdictTable{Version: 2})
		}, want: "[table 1 table 2]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newSession("a", "1", 16)
			tt.run(s)
			if got := fmt.Sprint(drain(s)); got != tt.want {
				t.Fatalf("sent %s, want %s", got, tt.want)
			}
		})
	}
}

func TestSessionOverflowCloses(t *testing.T) {
	s := newSession("a", "1", 2)
	for range 3 {
		s.send(&vigilpb.ServerMessage{})
	}
	select {
	case <-s.done:
	default:
		t.Fatal("session still open after its queue overflowed")
	}
	if !errors.Is(s.err, errQueueFull) {
		t.Fatalf("session ended with %v, want errQueueFull", s.err)
	}
}

func TestSlowAgentDoesNotBlockOthers(t *testing.T) {
	ts := runServer(t, t.TempDir())
	slowCert, fast := ts.enroll(t, "slow"), ts.connect(t, ts.enroll(t, "fast"), "fast")
	fast.next(t)

	// The slow agent says hello and then never reads.
	client := vigilpb.NewAgentServiceClient(dial(t, ts.addr, ts.ca.CertPEM(), slowCert))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	slow, err := client.Connect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	hello := &vigilpb.AgentMessage{Body: &vigilpb.AgentMessage_Hello{Hello: &vigilpb.Hello{Name: "slow"}}}
	if err := slow.Send(hello); err != nil {
		t.Fatal(err)
	}
	waitOnline(t, ts, "slow")

	big := &vigilpb.TableDiff{KillOnExecAdded: []string{strings.Repeat("f", 64<<10)}}
	for v := uint64(2); v < sendQueueLen+200; v++ {
		d := proto.CloneOf(big)
		d.BaseVersion, d.Version = v-1, v
		ts.srv.cfg.Dispatcher.PushDiff("slow", d)
	}

	// The fast agent is served at once.
	operator := ts.admin(t, pki.RoleOperator)
	done := make(chan *vigilpb.InstructionResponse, 1)
	go func() {
		resp, _ := operator.Kill(context.Background(), &vigilpb.KillRequest{Agent: "fast", Pid: 7})
		done <- resp
	}()
	ins := fast.next(t).GetInstruction()
	fast.send(t, ack(ins.GetSeq()))
	if resp := <-done; resp.GetOutcome() != vigilpb.InstructionOutcome_INSTRUCTION_OUTCOME_DONE {
		t.Fatalf("fast agent's kill: %v", resp)
	}

	// The slow agent's stream was ended so it reconnects for a full table.
	for {
		if _, err := slow.Recv(); err != nil {
			if status.Code(err) != codes.ResourceExhausted {
				t.Fatalf("slow stream ended with %v, want ResourceExhausted", err)
			}
			break
		}
	}
}

func waitOnline(t *testing.T, ts *testServer, agent string) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if ts.srv.cfg.Registry.Conn(agent) != nil {
			return
		}
	}
	t.Fatalf("agent %s not online after 5s", agent)
}
