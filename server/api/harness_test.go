package api

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	vigilpb "github.com/vigilsec/vigil/gen/vigil/v1"
	"github.com/vigilsec/vigil/server/pki"
	"github.com/vigilsec/vigil/server/registry"
	"github.com/vigilsec/vigil/server/store"
)

// fakeEngine records what the transport hands it. It decides nothing; the
// transport tests only need to see the calls.
type fakeEngine struct {
	mu       sync.Mutex
	online   []string
	offline  []string
	ingested []*vigilpb.Event
	acked    map[string]uint64
	cuts     []string
	revoked  []string
	version  uint64
}

func newFakeEngine() *fakeEngine { return &fakeEngine{acked: map[string]uint64{}} }

func (e *fakeEngine) ValidatePolicy(*vigilpb.PolicyDocument) []*vigilpb.PolicyError { return nil }
func (e *fakeEngine) ApplyPolicy(context.Context, *vigilpb.PolicyDocument,
	string) (uint64, []*vigilpb.PolicyError, error) {
	return 1, nil, nil
}
func (e *fakeEngine) Policy(uint64) (*vigilpb.GetPolicyResponse, error) {
	return &vigilpb.GetPolicyResponse{}, nil
}
func (e *fakeEngine) PolicyHistory() ([]*vigilpb.GetPolicyResponse, error) { return nil, nil }

func (e *fakeEngine) AgentOnline(_ context.Context, agent string, _ *vigilpb.Hello) (*vigilpb.VerdictTable, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.online = append(e.online, agent)
	e.version++
	return &vigilpb.VerdictTable{Version: e.version, DefaultEgress: vigilpb.Verdict_VERDICT_ALLOW}, nil
}

func (e *fakeEngine) AgentOffline(agent string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.offline = append(e.offline, agent)
}

func (e *fakeEngine) TableAcked(agent string, v uint64) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.acked[agent] = v
}

func (e *fakeEngine) Ingest(_ context.Context, _ string, evs []*vigilpb.Event) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.ingested = append(e.ingested, evs...)
	return nil
}

func (e *fakeEngine) Posture(context.Context, string, *vigilpb.Posture) error   { return nil }
func (e *fakeEngine) Counters(context.Context, string, *vigilpb.Counters) error { return nil }
func (e *fakeEngine) Report(context.Context, *vigilpb.ReportRequest) (*vigilpb.ReportResponse, error) {
	return &vigilpb.ReportResponse{Level: "low"}, nil
}
func (e *fakeEngine) Entities(string) ([]*vigilpb.Entity, error) { return nil, nil }
func (e *fakeEngine) Explain(*vigilpb.ExplainRequest) (*vigilpb.ExplainResponse, error) {
	return &vigilpb.ExplainResponse{}, nil
}
func (e *fakeEngine) Level(string) string { return "high" }

func (e *fakeEngine) RuleName(id uint32) string {
	if id == 7 {
		return "no-telnet"
	}
	return ""
}

func (e *fakeEngine) Cut(_ context.Context, agent, peer string) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.cuts = append(e.cuts, agent+" "+peer)
	return nil
}

func (e *fakeEngine) Restore(_ context.Context, agent, peer string) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.cuts = append(e.cuts, agent+" -"+peer)
	return nil
}

func (e *fakeEngine) ingestedCount() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return len(e.ingested)
}

// testServer is a running server over real TCP on loopback.
type testServer struct {
	dir    string
	addr   string
	ca     *pki.Authority
	st     *store.Store
	engine *fakeEngine
	srv    *Server
	done   chan error
}

// runServer starts a server on dir; it stops when the test ends.
func runServer(t *testing.T, dir string) *testServer {
	t.Helper()
	ts, err := startServer(dir, "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ts.stop)
	return ts
}

func startServer(dir, listen string) (*testServer, error) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	ca, err := pki.Open(dir)
	if err != nil {
		return nil, err
	}
	st, err := store.Open(store.Options{Dir: filepath.Join(dir, "db"), Logger: log})
	if err != nil {
		return nil, err
	}
	reg, err := registry.New(st)
	if err != nil {
		st.Close()
		return nil, err
	}
	disp := NewDispatcher(DispatcherConfig{Store: st, Registry: reg, Logger: log})
	eng := newFakeEngine()
	srv, err := New(Config{Store: st, Registry: reg, Authority: ca, Engine: eng, Dispatcher: disp,
		Logger: log, AckTimeout: 2 * time.Second})
	if err != nil {
		st.Close()
		return nil, err
	}

	lis, err := net.Listen("tcp", listen)
	if err != nil {
		st.Close()
		return nil, err
	}
	ts := &testServer{dir: dir, addr: lis.Addr().String(), ca: ca, st: st, engine: eng, srv: srv,
		done: make(chan error, 1)}
	go func() { ts.done <- srv.Serve(lis) }()
	return ts, nil
}

func (ts *testServer) stop() {
	if ts.srv == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ts.srv.Shutdown(ctx)
	<-ts.done
	ts.st.Close()
	ts.srv = nil
}

// dial connects with the given client certificate (nil: none), trusting
// the server's CA.
func dial(t testing.TB, addr string, caPEM []byte, cert *tls.Certificate) *grpc.ClientConn {
	t.Helper()
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	cfg := &tls.Config{RootCAs: pool, ServerName: "localhost", MinVersion: tls.VersionTLS13}
	if cert != nil {
		cfg.Certificates = []tls.Certificate{*cert}
	}
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// adminCert issues an admin certificate of role from ca.
func adminCert(t testing.TB, ca *pki.Authority, role pki.Role) *tls.Certificate {
	t.Helper()
	dir := t.TempDir()
	if err := ca.IssueAdmin(role, "tester", dir); err != nil {
		t.Fatal(err)
	}
	pair, err := tls.LoadX509KeyPair(filepath.Join(dir, "admin.crt"), filepath.Join(dir, "admin.key"))
	if err != nil {
		t.Fatal(err)
	}
	return &pair
}

func (ts *testServer) admin(t testing.TB, role pki.Role) vigilpb.AdminServiceClient {
	return vigilpb.NewAdminServiceClient(dial(t, ts.addr, ts.ca.CertPEM(), adminCert(t, ts.ca, role)))
}

func (ts *testServer) token(t testing.TB) string {
	t.Helper()
	resp, err := ts.admin(t, pki.RoleOperator).CreateToken(context.Background(), &vigilpb.CreateTokenRequest{})
	if err != nil {
		t.Fatal(err)
	}
	return resp.Token
}

// csr returns a fresh key and a certificate request for it.
func csr(t testing.TB) (*ecdsa.PrivateKey, []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.CertificateRequest{Subject: pkix.Name{CommonName: "x"}}
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		t.Fatal(err)
	}
	return key, der
}

// enroll enrolls name with a fresh token and returns the agent's TLS pair.
func (ts *testServer) enroll(t testing.TB, name string) *tls.Certificate {
	t.Helper()
	key, der := csr(t)
	client := vigilpb.NewEnrollmentServiceClient(dial(t, ts.addr, ts.ca.CertPEM(), nil))
	resp, err := client.Enroll(context.Background(), &vigilpb.EnrollRequest{Token: ts.token(t), Name: name, CsrDer: der})
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
	pair, err := tls.X509KeyPair(resp.CertificatePem, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	return &pair
}

// agentStream is a test agent's open stream with a reader goroutine.
type agentStream struct {
	stream vigilpb.AgentService_ConnectClient
	cancel context.CancelFunc
	msgs   chan *vigilpb.ServerMessage
	err    chan error
}

func (ts *testServer) connect(t testing.TB, cert *tls.Certificate, name string) *agentStream {
	t.Helper()
	return ts.connectWith(t, cert, &vigilpb.Hello{Name: name})
}

// connectWith opens a stream with cert and sends hello first.
func (ts *testServer) connectWith(t testing.TB, cert *tls.Certificate, hello *vigilpb.Hello) *agentStream {
	t.Helper()
	client := vigilpb.NewAgentServiceClient(dial(t, ts.addr, ts.ca.CertPEM(), cert))
	ctx, cancel := context.WithCancel(context.Background())
	stream, err := client.Connect(ctx)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	a := &agentStream{stream: stream, cancel: cancel,
		msgs: make(chan *vigilpb.ServerMessage, 100), err: make(chan error, 1)}
	go func() {
		for {
			msg, err := stream.Recv()
			if err != nil {
				a.err <- err
				return
			}
			a.msgs <- msg
		}
	}()
	t.Cleanup(func() {
		cancel()
		<-a.err
	})
	// A refused stream fails Send with io.EOF; its status comes from Recv.
	msg := &vigilpb.AgentMessage{Body: &vigilpb.AgentMessage_Hello{Hello: hello}}
	if err := stream.Send(msg); err != nil && !errors.Is(err, io.EOF) {
		t.Fatal(err)
	}
	return a
}

func (a *agentStream) send(t testing.TB, msg *vigilpb.AgentMessage) {
	t.Helper()
	if err := a.stream.Send(msg); err != nil {
		t.Fatal(err)
	}
}

// next returns the next server message, failing after a few seconds.
func (a *agentStream) next(t testing.TB) *vigilpb.ServerMessage {
	t.Helper()
	select {
	case m := <-a.msgs:
		return m
	case err := <-a.err:
		a.err <- err
		t.Fatalf("stream ended: %v", err)
	case <-time.After(5 * time.Second):
		t.Fatal("no server message within 5s")
	}
	return nil
}

// end waits for the stream to end and returns its error.
func (a *agentStream) end(t testing.TB) error {
	t.Helper()
	select {
	case err := <-a.err:
		a.err <- err
		return err
	case m := <-a.msgs:
		t.Fatalf("got %v, want the stream to end", m)
	case <-time.After(5 * time.Second):
		t.Fatal("stream still open after 5s")
	}
	return nil
}

func batch(seqs ...uint64) *vigilpb.AgentMessage {
	var evs []*vigilpb.Event
	for _, s := range seqs {
		evs = append(evs, &vigilpb.Event{Seq: s, Kind: vigilpb.EventKind_EVENT_KIND_EXEC, Message: "exec"})
	}
	return &vigilpb.AgentMessage{Body: &vigilpb.AgentMessage_Events{Events: &vigilpb.EventBatch{Events: evs}}}
}

func (e *fakeEngine) AgentRevoked(_ context.Context, agent string) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.revoked = append(e.revoked, agent)
	return nil
}
