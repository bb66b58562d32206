package stream

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vigilsec/vigil/agent/enroll"
	"github.com/vigilsec/vigil/agent/internal/testpki"
	"github.com/vigilsec/vigil/agent/spool"
	vigilpb "github.com/vigilsec/vigil/gen/vigil/v1"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// agentServer is a small AgentService: each stream's messages go to in; the
// test sends on out; a value on drop ends the current stream.
type agentServer struct {
	vigilpb.UnimplementedAgentServiceServer
	in   chan *vigilpb.AgentMessage
	out  chan *vigilpb.ServerMessage
	drop chan struct{}

	mu    sync.Mutex
	names []string // client certificate names, one per stream
}

func (s *agentServer) Connect(st vigilpb.AgentService_ConnectServer) error {
	p, _ := peer.FromContext(st.Context())
	info := p.AuthInfo.(credentials.TLSInfo)
	if len(info.State.VerifiedChains) == 0 {
		return status.Error(codes.Unauthenticated, "no client certificate")
	}
	s.mu.Lock()
	s.names = append(s.names, info.State.VerifiedChains[0][0].Subject.CommonName)
	s.mu.Unlock()

	errc := make(chan error, 1)
	go func() {
		for {
			m, err := st.Recv()
			if err != nil {
				errc <- err
				return
			}
			s.in <- m
		}
	}()
	for {
		select {
		case m := <-s.out:
			if err := st.Send(m); err != nil {
				return err
			}
		case <-s.drop:
			return status.Error(codes.Unavailable, "dropped by test")
		case err := <-errc:
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
	}
}

// handler records what the client hands it.
type handler struct {
	mu      sync.Mutex
	version uint64
	online  bool
	hellos  int
}

func (h *handler) Hello() *vigilpb.Hello {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.hellos++
	return &vigilpb.Hello{Name: "dev-1", TableVersion: h.version}
}

func (h *handler) Table(t *vigilpb.VerdictTable) *vigilpb.TableAck {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.version = t.Version
	return &vigilpb.TableAck{Version: t.Version}
}

func (h *handler) Diff(d *vigilpb.TableDiff) (*vigilpb.TableAck, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if d.BaseVersion != h.version {
		return nil, errors.New("stale base")
	}
	h.version = d.Version
	return &vigilpb.TableAck{Version: d.Version}, nil
}

func (h *handler) Instruction(ins *vigilpb.Instruction, received time.Time) *vigilpb.InstructionAck {
	return &vigilpb.InstructionAck{Seq: ins.Seq, Outcome: vigilpb.InstructionOutcome_INSTRUCTION_OUTCOME_DONE,
		LatencyUs: uint64(time.Since(received).Microseconds())}
}

func (h *handler) Online(up bool) {
	h.mu.Lock()
	h.online = up
	h.mu.Unlock()
}

type env struct {
	srv    *agentServer
	client *Client
	spool  *spool.Spool
	h      *handler
}

func start(t *testing.T) *env {
	t.Helper()
	ca := testpki.New(t)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &agentServer{in: make(chan *vigilpb.AgentMessage, 1024), out: make(chan *vigilpb.ServerMessage), drop: make(chan struct{})}
	gs := grpc.NewServer(grpc.Creds(credentials.NewTLS(ca.ServerTLS(t, true))))
	vigilpb.RegisterAgentServiceServer(gs, srv)
	vigilpb.RegisterEnrollmentServiceServer(gs, &enrollService{t: t, ca: ca, token: "vgl1.t.secret." + ca.Fingerprint()})
	go gs.Serve(lis)
	t.Cleanup(gs.Stop)

	sp, err := spool.Open(filepath.Join(t.TempDir(), "spool"), 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sp.Close() })

	e := &env{srv: srv, spool: sp, h: &handler{}}
	e.client = New(Config{
		Addr: lis.Addr().String(), TLS: agentTLS(t, lis.Addr().String(), ca), Spool: sp, Handler: e.h,
		Logger: slog.New(slog.DiscardHandler), BackoffMin: 20 * time.Millisecond, BackoffMax: 100 * time.Millisecond,
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { e.client.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return e
}

// enrollService signs any request that carries the test's token.
type enrollService struct {
	vigilpb.UnimplementedEnrollmentServiceServer
	t     *testing.T
	ca    *testpki.CA
	token string
}

func (s *enrollService) Enroll(_ context.Context, req *vigilpb.EnrollRequest) (*vigilpb.EnrollResponse, error) {
	if req.Token != s.token {
		return nil, status.Error(codes.PermissionDenied, "bad token")
	}
	return &vigilpb.EnrollResponse{CertificatePem: s.ca.SignCSR(s.t, req.Name, req.CsrDer), CaPem: s.ca.PEM}, nil
}

// agentTLS enrolls through the server with a pinned token, as a first start
// does, and returns the agent's mutual-TLS configuration.
func agentTLS(t *testing.T, addr string, ca *testpki.CA) *tls.Config {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	creds, err := enroll.Enroll(ctx, addr, "vgl1.t.secret."+ca.Fingerprint(), "dev-1", filepath.Join(t.TempDir(), "id"))
	if err != nil {
		t.Fatal(err)
	}
	return creds.ClientTLS()
}

func (e *env) next(t *testing.T) *vigilpb.AgentMessage {
	t.Helper()
	select {
	case m := <-e.srv.in:
		return m
	case <-time.After(10 * time.Second):
		t.Fatal("no message from the agent within 10s")
		return nil
	}
}

// nextOf skips event batches until a message of the wanted kind arrives.
func nextHello(t *testing.T, e *env) *vigilpb.Hello {
	t.Helper()
	for {
		if h := e.next(t).GetHello(); h != nil {
			return h
		}
	}
}

func (e *env) appendEvents(t *testing.T, n int) {
	t.Helper()
	for i := 0; i < n; i++ {
		if _, err := e.spool.Append(&vigilpb.Event{Kind: vigilpb.EventKind_EVENT_KIND_EXEC}); err != nil {
			t.Fatal(err)
		}
	}
}

// collect gathers event sequence numbers until it has want of them.
func (e *env) collect(t *testing.T, want int) []uint64 {
	t.Helper()
	var seqs []uint64
	for len(seqs) < want {
		m := e.next(t)
		for _, ev := range m.GetEvents().GetEvents() {
			seqs = append(seqs, ev.Seq)
		}
	}
	return seqs
}

func TestHelloTableInstruction(t *testing.T) {
	e := start(t)
	if h := nextHello(t, e); h.Name != "dev-1" {
		t.Fatalf("hello %v", h)
	}

	e.srv.out <- &vigilpb.ServerMessage{Body: &vigilpb.ServerMessage_Table{Table: &vigilpb.VerdictTable{Version: 3}}}
	if ack := e.next(t).GetTableAck(); ack.GetVersion() != 3 {
		t.Fatalf("table ack %v, want version 3", ack)
	}
	e.srv.out <- &vigilpb.ServerMessage{Body: &vigilpb.ServerMessage_Instruction{Instruction: &vigilpb.Instruction{Seq: 9, Kind: vigilpb.InstructionKind_INSTRUCTION_KIND_KILL}}}
	if ack := e.next(t).GetAck(); ack.GetSeq() != 9 || ack.Outcome != vigilpb.InstructionOutcome_INSTRUCTION_OUTCOME_DONE {
		t.Fatalf("instruction ack %v", ack)
	}

	// A diff on a base the agent does not hold makes it say Hello again.
	e.srv.out <- &vigilpb.ServerMessage{Body: &vigilpb.ServerMessage_Diff{Diff: &vigilpb.TableDiff{BaseVersion: 2, Version: 4}}}
	if h := e.next(t).GetHello(); h == nil || h.TableVersion != 3 {
		t.Fatalf("after stale diff got %v, want Hello with table 3", h)
	}
	if e.client.State() != StateOnline || !e.h.online {
		t.Errorf("state %v online %v, want online", e.client.State(), e.h.online)
	}
	if !e.client.Send(&vigilpb.AgentMessage{Body: &vigilpb.AgentMessage_Posture{Posture: &vigilpb.Posture{Hostname: "h"}}}) {
		t.Fatal("Send refused while online")
	}
	if p := e.next(t).GetPosture(); p.GetHostname() != "h" {
		t.Errorf("posture %v", p)
	}
}

// TestEventsSurviveStreamLoss drops the stream with events acknowledged in
// part: after reconnecting the agent resends exactly the unacknowledged
// ones, in order, then the new ones.
func TestEventsSurviveStreamLoss(t *testing.T) {
	e := start(t)
	e.appendEvents(t, 5)
	nextHello(t, e)
	e.srv.out <- &vigilpb.ServerMessage{Body: &vigilpb.ServerMessage_Table{Table: &vigilpb.VerdictTable{Version: 1}}}

	if got := e.collect(t, 5); !equal(got, []uint64{1, 2, 3, 4, 5}) {
		t.Fatalf("first stream events %v", got)
	}
	e.srv.out <- &vigilpb.ServerMessage{Body: &vigilpb.ServerMessage_EventsAck{EventsAck: &vigilpb.EventsAck{Seq: 3}}}
	waitFor(t, func() bool { return e.spool.Stats().Acked == 3 })

	e.srv.drop <- struct{}{}
	e.appendEvents(t, 2) // spooled while the stream is down or coming back

	nextHello(t, e)
	if got := e.collect(t, 4); !equal(got, []uint64{4, 5, 6, 7}) {
		t.Fatalf("after reconnect events %v, want [4 5 6 7]", got)
	}
	if e.h.hellos < 2 || len(e.srv.names) < 2 || e.srv.names[1] != "dev-1" {
		t.Errorf("hellos %d, streams by %v", e.h.hellos, e.srv.names)
	}
}

func equal(a, b []uint64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatal("condition not met within 5s")
}

// sink is the sending half of a stream, recording what it is given.
type sink struct {
	vigilpb.AgentService_ConnectClient
	sent []*vigilpb.AgentMessage
}

func (s *sink) Send(m *vigilpb.AgentMessage) error {
	s.sent = append(s.sent, m)
	return nil
}

// TestSendEventsResumesAfterAck checks the sender when the server has
// acknowledged past what this stream sent (stored from an earlier stream),
// and when too many events are in flight.
func TestSendEventsResumesAfterAck(t *testing.T) {
	tests := []struct {
		name     string
		acked    uint64
		sent     uint64
		inFlight uint64
		want     []uint64
		wantLast uint64
	}{
		{"ack beyond sent", 3, 0, 100, []uint64{4, 5, 6, 7, 8}, 8},
		{"resume after sent", 0, 5, 100, []uint64{6, 7, 8}, 8},
		{"in-flight bound", 0, 0, 4, []uint64{1, 2, 3, 4}, 4},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sp, err := spool.Open(t.TempDir(), 0)
			if err != nil {
				t.Fatal(err)
			}
			defer sp.Close()
			for i := 0; i < 8; i++ {
				sp.Append(&vigilpb.Event{})
			}
			sp.Ack(tt.acked)
			c := New(Config{Spool: sp, BatchEvents: 2, MaxInFlight: tt.inFlight})

			out := &sink{}
			last, err := c.sendEvents(out, tt.sent)
			if err != nil {
				t.Fatal(err)
			}
			var got []uint64
			for _, m := range out.sent {
				for _, ev := range m.GetEvents().GetEvents() {
					got = append(got, ev.Seq)
				}
			}
			if !equal(got, tt.want) || last != tt.wantLast {
				t.Errorf("sent %v (last %d), want %v (last %d)", got, last, tt.want, tt.wantLast)
			}
		})
	}
}

// TestEventBatchReportsGaps checks that a batch names the sequence numbers
// the spool no longer holds and ends before a gap inside it.
func TestEventBatchReportsGaps(t *testing.T) {
	tests := []struct {
		name        string
		sent        uint64
		seqs        []uint64
		wantThrough uint64
		want        []uint64
	}{
		{name: "no gap", sent: 3, seqs: []uint64{4, 5}, want: []uint64{4, 5}},
		{name: "gap before", sent: 3, seqs: []uint64{9, 10}, wantThrough: 8, want: []uint64{9, 10}},
		{name: "gap inside", sent: 3, seqs: []uint64{4, 5, 9}, want: []uint64{4, 5}},
		{name: "gap before and inside", sent: 0, seqs: []uint64{3, 7}, wantThrough: 2, want: []uint64{3}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var evs []*vigilpb.Event
			for _, s := range tt.seqs {
				evs = append(evs, &vigilpb.Event{Seq: s})
			}
			b := eventBatch(tt.sent, evs)
			var got []uint64
			for _, ev := range b.Events {
				got = append(got, ev.Seq)
			}
			if b.DroppedThrough != tt.wantThrough || !equal(got, tt.want) {
				t.Errorf("batch %v through %d, want %v through %d", got, b.DroppedThrough, tt.want, tt.wantThrough)
			}
		})
	}
}

// TestLargeTableAccepted checks that a table beyond gRPC's default 4 MiB
// receive bound, as a service host admitting many peers gets, is applied.
func TestLargeTableAccepted(t *testing.T) {
	e := start(t)
	nextHello(t, e)
	table := &vigilpb.VerdictTable{Version: 7, CutPeers: []string{strings.Repeat("1", 6<<20)}}
	e.srv.out <- &vigilpb.ServerMessage{Body: &vigilpb.ServerMessage_Table{Table: table}}
	for {
		if ack := e.next(t).GetTableAck(); ack != nil {
			if ack.GetVersion() != 7 {
				t.Fatalf("table ack %v, want version 7", ack)
			}
			return
		}
	}
}
