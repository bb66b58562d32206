package api

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/vigilsec/vigil/agent/spool"
	"github.com/vigilsec/vigil/agent/stream"
	vigilpb "github.com/vigilsec/vigil/gen/vigil/v1"
	"github.com/vigilsec/vigil/server/store"
)

// tableHandler is an agent that takes every table and does nothing else.
type tableHandler struct{ name string }

func (h tableHandler) Hello() *vigilpb.Hello { return &vigilpb.Hello{Name: h.name} }
func (h tableHandler) Table(t *vigilpb.VerdictTable) *vigilpb.TableAck {
	return &vigilpb.TableAck{Version: t.GetVersion()}
}
func (h tableHandler) Diff(d *vigilpb.TableDiff) (*vigilpb.TableAck, error) {
	return &vigilpb.TableAck{Version: d.GetVersion()}, nil
}
func (h tableHandler) Instruction(ins *vigilpb.Instruction, _ time.Time) *vigilpb.InstructionAck {
	return &vigilpb.InstructionAck{Seq: ins.GetSeq()}
}
func (h tableHandler) Online(bool) {}

// runAgent runs the agent's real stream client on sp against ts's address
// until the test ends.
func runAgent(t *testing.T, ts *testServer, cert *tls.Certificate, sp *spool.Spool) {
	t.Helper()
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ts.ca.CertPEM())
	cfg := &tls.Config{RootCAs: pool, ServerName: "localhost", MinVersion: tls.VersionTLS13,
		Certificates: []tls.Certificate{*cert}}
	c := stream.New(stream.Config{Addr: ts.addr, TLS: cfg, Spool: sp, Handler: tableHandler{"dev"},
		Logger: slog.New(slog.DiscardHandler), BackoffMin: 20 * time.Millisecond,
		BackoffMax: 100 * time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { c.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
}

// TestSpoolOverflowDrains overflows a small spool while the server is down;
// once it is back, the spool drains, the acknowledgement passes the events
// the spool dropped, and every event kept is stored exactly once, with the
// loss event counting the dropped ones.
func TestSpoolOverflowDrains(t *testing.T) {
	dir := t.TempDir()
	ts := runServer(t, dir)
	cert := ts.enroll(t, "dev")
	sp, err := spool.Open(filepath.Join(t.TempDir(), "spool"), 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	defer sp.Close()
	appendN(t, sp, 3, "")
	runAgent(t, ts, cert, sp)
	waitUntil(t, "first events acknowledged", func() bool { return sp.Stats().Acked == 3 })

	ts.stop()
	appendN(t, sp, 600, strings.Repeat("x", 4096)) // past two 1 MiB segments
	if sp.Stats().Dropped == 0 {
		t.Fatal("the spool dropped nothing; the test needs an overflow")
	}
	restarted, err := startServer(dir, ts.addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(restarted.stop)

	last := sp.Stats().Last
	waitUntil(t, "spool drained", func() bool { return sp.Stats().Acked == last })
	checkStoredOnce(t, restarted.st, last, sp.Stats().Dropped)
}

func appendN(t *testing.T, sp *spool.Spool, n int, msg string) {
	t.Helper()
	for range n {
		if _, err := sp.Append(&vigilpb.Event{Kind: vigilpb.EventKind_EVENT_KIND_EXEC, Message: msg}); err != nil {
			t.Fatal(err)
		}
	}
}

// checkStoredOnce checks that the events before and after the gap the
// spool left are each stored exactly once, through last, and that the
// stored loss events count the dropped ones.
func checkStoredOnce(t *testing.T, st *store.Store, last, dropped uint64) {
	t.Helper()
	evs, err := st.QueryEvents(store.EventFilter{Agent: "dev"})
	if err != nil {
		t.Fatal(err)
	}
	count := map[uint64]int{}
	var lost uint64
	for _, ev := range evs {
		count[ev.GetSeq()]++
		lost += ev.GetLost()
	}
	after := uint64(4)
	for count[after] == 0 && after <= last {
		after++
	}
	for seq := uint64(1); seq <= last; seq++ {
		if (seq <= 3 || seq >= after) && count[seq] != 1 {
			t.Errorf("seq %d stored %d times, want once", seq, count[seq])
		}
	}
	if after == 4 || lost != dropped {
		t.Errorf("gap ends at %d, loss events count %d; the spool dropped %d", after, lost, dropped)
	}
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("%s: not within 10s", what)
}

// TestDropMarkWithoutEvents checks that a drop mark no event of its batch
// follows is refused, so an agent cannot skip events it never sent.
func TestDropMarkWithoutEvents(t *testing.T) {
	ts := runServer(t, t.TempDir())
	a := ts.connect(t, ts.enroll(t, "laptop"), "laptop")
	a.next(t) // table
	msg := batch(3)
	msg.GetEvents().DroppedThrough = 3
	a.send(t, msg)
	wantCode(t, a.end(t), codes.InvalidArgument)
}
