package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	vigilpb "github.com/vigilsec/vigil/gen/vigil/v1"
)

// authority is a throwaway CA that issues the server and admin certificates
// of one test.
type authority struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

func newAuthority(t *testing.T) *authority {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "vigil test ca"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &authority{cert: cert, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// issue signs a leaf certificate; server leaves get the loopback SANs.
func (a *authority) issue(t *testing.T, cn, ou string, server bool) (certPEM, keyPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: cn, OrganizationalUnit: []string{ou}},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	if server {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		tmpl.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}
		tmpl.DNSNames = []string{"localhost"}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, a.cert, &key.PublicKey, a.key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER})
}

// writeCredentials writes a vigilctl credentials directory for role.
func (a *authority) writeCredentials(t *testing.T, dir, role string) string {
	t.Helper()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	certPEM, keyPEM := a.issue(t, "admin", role, false)
	files := map[string][]byte{"ca.crt": a.pem, "admin.crt": certPEM, "admin.key": keyPEM}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// fakeAdmin is an AdminService that answers with canned responses and
// records the requests it got. It reads the caller's role from the OU of
// its verified client certificate and lets viewers only read.
type fakeAdmin struct {
	vigilpb.UnimplementedAdminServiceServer

	mu       sync.Mutex
	requests []proto.Message // guarded by mu

	// Canned answers; tests change them only between calls.
	agents   *vigilpb.ListAgentsResponse
	entities *vigilpb.ListEntitiesResponse
	history  *vigilpb.PolicyHistoryResponse
	policy   *vigilpb.GetPolicyResponse
	events   []*vigilpb.Event
	cutShort bool // QueryEvents says it left older events out
	apply    *vigilpb.ApplyPolicyResponse
	explain  *vigilpb.ExplainResponse
	outcome  *vigilpb.InstructionResponse
	failWith error // returned by every call when set
}

func (f *fakeAdmin) record(ctx context.Context, req proto.Message, action string) error {
	f.mu.Lock()
	f.requests = append(f.requests, req)
	f.mu.Unlock()
	if f.failWith != nil {
		return f.failWith
	}
	p, _ := peer.FromContext(ctx)
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(info.State.VerifiedChains) == 0 {
		return status.Error(codes.Unauthenticated, "no client certificate")
	}
	role := info.State.VerifiedChains[0][0].Subject.OrganizationalUnit[0]
	if role == "viewer" && action != "" {
		return status.Errorf(codes.PermissionDenied, "role viewer cannot %s", action)
	}
	return nil
}

// last returns the most recent request.
func (f *fakeAdmin) last() proto.Message {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.requests) == 0 {
		return nil
	}
	return f.requests[len(f.requests)-1]
}

func (f *fakeAdmin) CreateToken(ctx context.Context, r *vigilpb.CreateTokenRequest) (*vigilpb.CreateTokenResponse, error) {
	if err := f.record(ctx, r, "create tokens"); err != nil {
		return nil, err
	}
	return &vigilpb.CreateTokenResponse{Token: "vgl1.secret", ExpiresUnix: 1700000000}, nil
}

func (f *fakeAdmin) ListAgents(ctx context.Context, r *vigilpb.ListAgentsRequest) (*vigilpb.ListAgentsResponse, error) {
	return f.agents, f.record(ctx, r, "")
}

func (f *fakeAdmin) RevokeAgent(ctx context.Context, r *vigilpb.RevokeAgentRequest) (*vigilpb.RevokeAgentResponse, error) {
	if err := f.record(ctx, r, "revoke"); err != nil {
		return nil, err
	}
	return &vigilpb.RevokeAgentResponse{}, nil
}

func (f *fakeAdmin) ListEntities(ctx context.Context, r *vigilpb.ListEntitiesRequest) (*vigilpb.ListEntitiesResponse, error) {
	return f.entities, f.record(ctx, r, "")
}

func (f *fakeAdmin) ApplyPolicy(ctx context.Context, r *vigilpb.ApplyPolicyRequest) (*vigilpb.ApplyPolicyResponse, error) {
	if err := f.record(ctx, r, "apply policies"); err != nil {
		return nil, err
	}
	return f.apply, nil
}

func (f *fakeAdmin) GetPolicy(ctx context.Context, r *vigilpb.GetPolicyRequest) (*vigilpb.GetPolicyResponse, error) {
	return f.policy, f.record(ctx, r, "")
}

func (f *fakeAdmin) PolicyHistory(ctx context.Context, r *vigilpb.PolicyHistoryRequest) (*vigilpb.PolicyHistoryResponse, error) {
	return f.history, f.record(ctx, r, "")
}

func (f *fakeAdmin) QueryEvents(ctx context.Context, r *vigilpb.QueryEventsRequest) (*vigilpb.QueryEventsResponse, error) {
	return &vigilpb.QueryEventsResponse{Events: f.events, Truncated: f.cutShort}, f.record(ctx, r, "")
}

// FollowEvents sends the canned events, then holds the stream open until
// the client goes away, as a live stream does.
func (f *fakeAdmin) FollowEvents(r *vigilpb.FollowEventsRequest, stream vigilpb.AdminService_FollowEventsServer) error {
	if err := f.record(stream.Context(), r, ""); err != nil {
		return err
	}
	for _, ev := range f.events {
		if err := stream.Send(ev); err != nil {
			return err
		}
	}
	<-stream.Context().Done()
	return nil
}

func (f *fakeAdmin) Explain(ctx context.Context, r *vigilpb.ExplainRequest) (*vigilpb.ExplainResponse, error) {
	return f.explain, f.record(ctx, r, "")
}

func (f *fakeAdmin) Kill(ctx context.Context, r *vigilpb.KillRequest) (*vigilpb.InstructionResponse, error) {
	return f.outcome, f.record(ctx, r, "kill")
}

func (f *fakeAdmin) Cut(ctx context.Context, r *vigilpb.CutRequest) (*vigilpb.InstructionResponse, error) {
	return f.outcome, f.record(ctx, r, "cut")
}

func (f *fakeAdmin) Restore(ctx context.Context, r *vigilpb.RestoreRequest) (*vigilpb.InstructionResponse, error) {
	return f.outcome, f.record(ctx, r, "restore")
}

func (f *fakeAdmin) Report(ctx context.Context, r *vigilpb.ReportRequest) (*vigilpb.ReportResponse, error) {
	if err := f.record(ctx, r, "report"); err != nil {
		return nil, err
	}
	return &vigilpb.ReportResponse{Level: r.GetLevel()}, nil
}

// serve starts f on a loopback port with mutual TLS under ca and returns
// its address; the server stops when the test ends.
func serve(t *testing.T, ca *authority, f *fakeAdmin) string {
	t.Helper()
	certPEM, keyPEM := ca.issue(t, "vigil-server", "server", true)
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca.cert)
	cfg := &tls.Config{
		Certificates: []tls.Certificate{pair},
		ClientCAs:    pool,
		ClientAuth:   tls.RequireAndVerifyClientCert,
		MinVersion:   tls.VersionTLS13,
	}

	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(grpc.Creds(credentials.NewTLS(cfg)))
	vigilpb.RegisterAdminServiceServer(srv, f)
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	return lis.Addr().String()
}

// closedAddr returns a loopback address nothing listens on.
func closedAddr(t *testing.T) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	lis.Close()
	return addr
}

// result is one vigilctl run.
type result struct {
	code           int
	stdout, stderr string
}

func (r result) String() string {
	return fmt.Sprintf("exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
}
