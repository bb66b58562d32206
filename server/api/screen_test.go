package api

import (
	"context"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	vigilpb "github.com/vigilsec/vigil/gen/vigil/v1"
	"github.com/vigilsec/vigil/server/pki"
)

// TestForgedServerEvents checks that an agent cannot write events of the
// server's kinds into the record, that its acknowledgement still passes
// them, and that an event timed far ahead is stored at its receive time.
func TestForgedServerEvents(t *testing.T) {
	ts := runServer(t, t.TempDir())
	a := ts.connect(t, ts.enroll(t, "laptop"), "laptop")
	a.next(t) // table

	future := time.Now().Add(24 * time.Hour).UnixNano()
	near := time.Now().Add(time.Minute).UnixNano()
	kinds := []vigilpb.EventKind{vigilpb.EventKind_EVENT_KIND_POLICY, vigilpb.EventKind_EVENT_KIND_INSTRUCTION,
		vigilpb.EventKind_EVENT_KIND_LEVEL, vigilpb.EventKind_EVENT_KIND_FINDING, vigilpb.EventKind_EVENT_KIND_UNSPECIFIED}
	var evs []*vigilpb.Event
	for i, k := range kinds {
		evs = append(evs, &vigilpb.Event{Seq: uint64(i + 1), Kind: k, Message: "forged", TimeUnixNano: future,
			Finding: &vigilpb.Finding{Entity: "device/laptop", Level: "high"}})
	}
	evs = append(evs,
		&vigilpb.Event{Seq: 6, Kind: vigilpb.EventKind_EVENT_KIND_EXEC, TimeUnixNano: future,
			Finding: &vigilpb.Finding{Entity: "device/laptop"}},
		&vigilpb.Event{Seq: 7, Kind: vigilpb.EventKind_EVENT_KIND_EXIT, TimeUnixNano: near})
	before := time.Now()
	a.send(t, &vigilpb.AgentMessage{Body: &vigilpb.AgentMessage_Events{Events: &vigilpb.EventBatch{Events: evs}}})
	if got := a.next(t).GetEventsAck().GetSeq(); got != 7 {
		t.Fatalf("ack %d, want 7: refused events count as received", got)
	}

	resp, err := ts.admin(t, pki.RoleViewer).QueryEvents(context.Background(), &vigilpb.QueryEventsRequest{Agent: "laptop"})
	if err != nil {
		t.Fatal(err)
	}
	got := map[uint64]*vigilpb.Event{}
	for _, ev := range resp.GetEvents() {
		got[ev.GetSeq()] = ev
	}
	if len(got) != 2 || got[6] == nil || got[7] == nil {
		t.Fatalf("stored %v, want only the exec and exit events", resp.GetEvents())
	}
	if at := got[6].GetTimeUnixNano(); at < before.UnixNano() || at > time.Now().UnixNano() || got[6].GetFinding() != nil {
		t.Errorf("exec stored at %d with finding %v, want its receive time and none", at, got[6].GetFinding())
	}
	if got[7].GetTimeUnixNano() != near {
		t.Errorf("exit a minute ahead stored at %d, want %d unchanged", got[7].GetTimeUnixNano(), near)
	}
	var m dto.Metric
	if err := ts.srv.refused.WithLabelValues("EVENT_KIND_POLICY").Write(&m); err != nil || m.GetCounter().GetValue() != 1 {
		t.Errorf("refused policy events counted %v (err %v), want 1", m.GetCounter().GetValue(), err)
	}
}

// TestConnectEventsNameTheirRule checks that a stored connection event
// carries the name of the rule its id stands for, and that an agent cannot
// put a name of its own there.
func TestConnectEventsNameTheirRule(t *testing.T) {
	ts := runServer(t, t.TempDir())
	a := ts.connect(t, ts.enroll(t, "laptop"), "laptop")
	a.next(t) // table

	connect := func(seq uint64, ruleID uint32, rule string) *vigilpb.Event {
		return &vigilpb.Event{Seq: seq, Kind: vigilpb.EventKind_EVENT_KIND_CONNECT,
			Connection: &vigilpb.Connection{RuleId: ruleID, Rule: rule, Verdict: vigilpb.Verdict_VERDICT_DENY}}
	}
	evs := []*vigilpb.Event{connect(1, 7, ""), connect(2, 9, "forged"), connect(3, 0, "forged")}
	a.send(t, &vigilpb.AgentMessage{Body: &vigilpb.AgentMessage_Events{Events: &vigilpb.EventBatch{Events: evs}}})
	if got := a.next(t).GetEventsAck().GetSeq(); got != 3 {
		t.Fatalf("ack %d, want 3", got)
	}

	resp, err := ts.admin(t, pki.RoleViewer).QueryEvents(context.Background(), &vigilpb.QueryEventsRequest{Agent: "laptop"})
	if err != nil {
		t.Fatal(err)
	}
	want := map[uint64]string{1: "no-telnet", 2: "", 3: ""}
	for _, ev := range resp.GetEvents() {
		if got := ev.GetConnection().GetRule(); got != want[ev.GetSeq()] {
			t.Errorf("event %d names rule %q, want %q", ev.GetSeq(), got, want[ev.GetSeq()])
		}
	}
}

func TestInstructionEventsReadAsWords(t *testing.T) {
	ins := &vigilpb.Instruction{Seq: 4, Kind: vigilpb.InstructionKind_INSTRUCTION_KIND_KILL_ON_EXEC}
	tests := []struct {
		name string
		ack  *vigilpb.InstructionAck
		want string
	}{
		{"issued", nil, "instruction 4 kill-on-exec issued"},
		{"done", &vigilpb.InstructionAck{Outcome: vigilpb.InstructionOutcome_INSTRUCTION_OUTCOME_DONE},
			"instruction 4 kill-on-exec: done"},
		{"failed", &vigilpb.InstructionAck{Outcome: vigilpb.InstructionOutcome_INSTRUCTION_OUTCOME_NOT_FOUND,
			Error: "no such process"}, "instruction 4 kill-on-exec: not-found: no such process"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := instructionEvent("laptop", ins, tt.ack).GetMessage(); got != tt.want {
				t.Errorf("message %q, want %q", got, tt.want)
			}
		})
	}
}
