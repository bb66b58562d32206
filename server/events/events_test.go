package events

import (
	"errors"
	"testing"

	vigilpb "github.com/vigilsec/vigil/gen/vigil/v1"
)

type collect struct{ got []*vigilpb.Event }

func (c *collect) Publish(ev *vigilpb.Event) { c.got = append(c.got, ev) }

func TestHub(t *testing.T) {
	out := &collect{}
	h := NewHub(out)
	onlyA := h.Subscribe(func(ev *vigilpb.Event) bool { return ev.Agent == "a" }, 4)
	defer onlyA.Close()
	small := h.Subscribe(func(*vigilpb.Event) bool { return true }, 1)
	defer small.Close()

	h.Publish(&vigilpb.Event{Agent: "a", Seq: 1})
	h.Publish(&vigilpb.Event{Agent: "b", Seq: 2})

	tests := []struct {
		name    string
		sub     *Subscription
		wantSeq []uint64
		wantErr error
	}{
		{name: "filter keeps matching events", sub: onlyA, wantSeq: []uint64{1}},
		{name: "slow follower overflows", sub: small, wantSeq: []uint64{1}, wantErr: ErrOverflow},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var seqs []uint64
			for len(tt.sub.C()) > 0 {
				seqs = append(seqs, (<-tt.sub.C()).Seq)
			}
			if len(seqs) != len(tt.wantSeq) || seqs[0] != tt.wantSeq[0] {
				t.Fatalf("got %v, want %v", seqs, tt.wantSeq)
			}
			if !errors.Is(tt.sub.Err(), tt.wantErr) {
				t.Fatalf("err %v, want %v", tt.sub.Err(), tt.wantErr)
			}
		})
	}
	if len(out.got) != 2 {
		t.Fatalf("publisher got %d events, want 2", len(out.got))
	}
}
