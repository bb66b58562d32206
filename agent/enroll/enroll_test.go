package enroll

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vigilsec/vigil/agent/internal/testpki"
	vigilpb "github.com/vigilsec/vigil/gen/vigil/v1"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// enrollServer signs requests that carry its one valid token, once.
type enrollServer struct {
	vigilpb.UnimplementedEnrollmentServiceServer
	t      *testing.T
	ca     *testpki.CA
	token  string
	used   bool
	caPEM  []byte // returned as the CA; the real one unless a test swaps it
	sawTLS bool
}

func (s *enrollServer) Enroll(ctx context.Context, req *vigilpb.EnrollRequest) (*vigilpb.EnrollResponse, error) {
	if p, ok := peer.FromContext(ctx); ok {
		_, s.sawTLS = p.AuthInfo.(credentials.TLSInfo)
	}
	if req.Token != s.token || s.used {
		return nil, status.Error(codes.PermissionDenied, "token rejected")
	}
	s.used = true
	return &vigilpb.EnrollResponse{CertificatePem: s.ca.SignCSR(s.t, req.Name, req.CsrDer), CaPem: s.caPEM}, nil
}

func serve(t *testing.T, cfg *tls.Config, svc vigilpb.EnrollmentServiceServer) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(grpc.Creds(credentials.NewTLS(cfg)))
	vigilpb.RegisterEnrollmentServiceServer(srv, svc)
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	return lis.Addr().String()
}

func TestEnrollThenReuse(t *testing.T) {
	ca := testpki.New(t)
	token := "vgl1.id1.s3cret." + ca.Fingerprint()
	svc := &enrollServer{t: t, ca: ca, token: token, caPEM: ca.PEM}
	addr := serve(t, ca.ServerTLS(t, true), svc)
	dir := filepath.Join(t.TempDir(), "identity")

	if _, err := Load(dir); !errors.Is(err, ErrNotEnrolled) {
		t.Fatalf("Load before enrollment = %v, want ErrNotEnrolled", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	creds, err := Enroll(ctx, addr, token, "laptop-7", dir)
	if err != nil {
		t.Fatalf("Enroll: %v", err)
	}
	if creds.Name != "laptop-7" || !svc.sawTLS {
		t.Errorf("name %q, server saw TLS %v", creds.Name, svc.sawTLS)
	}

	checkMode(t, dir, 0o700)
	checkMode(t, filepath.Join(dir, KeyFile), 0o600)

	again, err := Load(dir)
	if err != nil {
		t.Fatalf("Load after enrollment: %v", err)
	}
	if !again.Cert.Leaf.Equal(creds.Cert.Leaf) {
		t.Error("reloaded certificate differs from the enrolled one")
	}
	// The one-time token is spent: a second enrollment must fail.
	if _, err := Enroll(ctx, addr, token, "laptop-7", t.TempDir()); status.Code(errors.Unwrap(err)) != codes.PermissionDenied {
		t.Errorf("second use of token: %v, want PermissionDenied", err)
	}
}

func checkMode(t *testing.T, path string, want os.FileMode) {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != want {
		t.Errorf("%s mode %o, want %o", path, st.Mode().Perm(), want)
	}
}

func TestEnrollRefusesUnpinnedServer(t *testing.T) {
	ca, other := testpki.New(t), testpki.New(t)

	tests := []struct {
		name   string
		server *tls.Config
		pin    string
		caPEM  []byte
	}{
		{"other ca pinned", ca.ServerTLS(t, true), other.Fingerprint(), ca.PEM},
		{"ca not in chain", ca.ServerTLS(t, false), ca.Fingerprint(), ca.PEM},
		{"response names another ca", ca.ServerTLS(t, true), ca.Fingerprint(), other.PEM},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			token := "vgl1.id.secret." + tt.pin
			svc := &enrollServer{t: t, ca: ca, token: token, caPEM: tt.caPEM}
			addr := serve(t, tt.server, svc)
			dir := t.TempDir()

			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_, err := Enroll(ctx, addr, token, "dev", dir)
			if !errors.Is(err, ErrPinMismatch) {
				t.Fatalf("Enroll = %v, want ErrPinMismatch", err)
			}
			if _, err := os.Stat(filepath.Join(dir, CertFile)); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("certificate saved despite the pin error")
			}
		})
	}
}

func TestParseToken(t *testing.T) {
	pin := strings.Repeat("Ab", 32)
	tests := []struct {
		name, token string
		ok          bool
	}{
		{"valid", "vgl1.id.secret." + pin, true},
		{"wrong prefix", "vgl2.id.secret." + pin, false},
		{"short pin", "vgl1.id.secret.abcd", false},
		{"empty secret", "vgl1.id.." + pin, false},
		{"extra part", "vgl1.id.secret.x." + pin, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tok, err := ParseToken(tt.token)
			if (err == nil) != tt.ok {
				t.Fatalf("ParseToken err = %v, want ok %v", err, tt.ok)
			}
			if tt.ok && tok.CAHash != strings.ToLower(pin) {
				t.Errorf("pin %q, want lowercase %q", tok.CAHash, strings.ToLower(pin))
			}
		})
	}
}

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
