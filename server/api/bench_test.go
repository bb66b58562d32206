package api

import (
	"context"
	"testing"

	vigilpb "github.com/vigilsec/vigil/gen/vigil/v1"
	"github.com/vigilsec/vigil/server/pki"
)

// BenchmarkKillRoundTrip measures an operator's Kill over mutual TLS on
// loopback: the instruction is stored, sent on the agent's stream,
// acknowledged by the agent and the call returns the outcome.
func BenchmarkKillRoundTrip(b *testing.B) {
	ts, err := startServer(b.TempDir(), "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ts.stop()
	operator := ts.admin(b, pki.RoleOperator)
	a := ts.connect(b, ts.enroll(b, "laptop"), "laptop")
	a.next(b)
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		for {
			select {
			case msg := <-a.msgs:
				if ins := msg.GetInstruction(); ins != nil {
					a.stream.Send(ack(ins.GetSeq()))
				}
			case <-stop:
				return
			}
		}
	}()

	ctx := context.Background()
	for b.Loop() {
		resp, err := operator.Kill(ctx, &vigilpb.KillRequest{Agent: "laptop", Pid: 1})
		if err != nil || resp.Outcome != vigilpb.InstructionOutcome_INSTRUCTION_OUTCOME_DONE {
			b.Fatalf("kill: %v err %v", resp, err)
		}
	}
}
