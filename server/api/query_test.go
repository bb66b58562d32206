package api

import (
	"context"
	"strings"
	"testing"

	"google.golang.org/grpc"

	vigilpb "github.com/vigilsec/vigil/gen/vigil/v1"
	"github.com/vigilsec/vigil/server/pki"
)

// TestQueryEventsFitsOneMessage checks that a large limit is capped and
// that large events are left out, oldest first, rather than making the
// reply larger than a message may be.
func TestQueryEventsFitsOneMessage(t *testing.T) {
	ts := runServer(t, t.TempDir())
	a := ts.connect(t, ts.enroll(t, "laptop"), "laptop")
	a.next(t) // table
	var seq uint64
	for range 6 {
		msg := batch()
		for range 1000 {
			seq++
			msg.GetEvents().Events = append(msg.GetEvents().Events,
				&vigilpb.Event{Seq: seq, Kind: vigilpb.EventKind_EVENT_KIND_EXEC})
		}
		a.send(t, msg)
		a.next(t) // events ack
	}
	admin := ts.admin(t, pki.RoleViewer)
	ctx := context.Background()
	big := grpc.MaxCallRecvMsgSize(MaxMessageBytes)

	resp, err := admin.QueryEvents(ctx, &vigilpb.QueryEventsRequest{Limit: 10000}, big)
	if err != nil || len(resp.GetEvents()) != maxQueryLimit || resp.GetTruncated() {
		t.Fatalf("limit 10000: %d events, truncated %v, err %v; want %d", len(resp.GetEvents()),
			resp.GetTruncated(), err, maxQueryLimit)
	}

	for range 4 {
		seq++
		a.send(t, &vigilpb.AgentMessage{Body: &vigilpb.AgentMessage_Events{Events: &vigilpb.EventBatch{
			Events: []*vigilpb.Event{{Seq: seq, Kind: vigilpb.EventKind_EVENT_KIND_EXEC,
				Message: strings.Repeat("m", 6<<20)}}}}})
		a.next(t) // events ack
	}
	resp, err = admin.QueryEvents(ctx, &vigilpb.QueryEventsRequest{Limit: 10000}, big)
	if err != nil || len(resp.GetEvents()) != 2 || !resp.GetTruncated() {
		t.Fatalf("large events: %d events, truncated %v, err %v; want the 2 newest, truncated",
			len(resp.GetEvents()), resp.GetTruncated(), err)
	}
	if last := resp.Events[1].GetSeq(); last != seq {
		t.Errorf("newest event shown is %d, want %d", last, seq)
	}
}
