package ctlclient

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func TestDescribe(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want Failure
	}{
		{
			name: "permission denied",
			err:  status.Error(codes.PermissionDenied, "role viewer cannot kill"),
			want: Failure{Message: "permission denied: role viewer cannot kill", Rejected: true},
		},
		{
			name: "unavailable",
			err:  status.Error(codes.Unavailable, "connection refused"),
			want: Failure{Message: "server 127.0.0.1:7443 unreachable: connection refused"},
		},
		{
			name: "tls handshake",
			err: status.Error(codes.Unavailable, `connection error: desc = "transport: authentication handshake failed: `+
				`tls: failed to verify certificate: x509: certificate signed by unknown authority"`),
			want: Failure{Message: "tls handshake with 127.0.0.1:7443 failed: " +
				"tls: failed to verify certificate: x509: certificate signed by unknown authority"},
		},
		{
			name: "invalid argument",
			err:  status.Error(codes.InvalidArgument, "peer: want IP or IP:PORT"),
			want: Failure{Message: "invalid request: peer: want IP or IP:PORT", Rejected: true},
		},
		{
			name: "internal without text",
			err:  status.Error(codes.Internal, ""),
			want: Failure{Message: "server error"},
		},
		{
			name: "deadline",
			err:  fmt.Errorf("call: %w", context.DeadlineExceeded),
			want: Failure{Message: "timed out waiting for 127.0.0.1:7443"},
		},
		{
			name: "plain error",
			err:  errors.New("read ca: no such file"),
			want: Failure{Message: "read ca: no such file"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Describe(tt.err, "127.0.0.1:7443"); got != tt.want {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestCredentialsDir(t *testing.T) {
	t.Chdir(t.TempDir())
	if got, err := CredentialsDir("/etc/vigil/admin"); err != nil || got != "/etc/vigil/admin" {
		t.Errorf("explicit dir: got %q, %v", got, err)
	}
	if _, err := CredentialsDir(""); !errors.Is(err, ErrNoCredentials) {
		t.Errorf("no default: got %v, want ErrNoCredentials", err)
	}
	if err := os.MkdirAll(DefaultCredentialsDir, 0o700); err != nil {
		t.Fatal(err)
	}
	if got, err := CredentialsDir(""); err != nil || got != DefaultCredentialsDir {
		t.Errorf("default dir: got %q, %v", got, err)
	}
}

func TestLoadTLSErrors(t *testing.T) {
	dir := t.TempDir()
	_, err := LoadTLS(dir)
	if err == nil || !strings.Contains(err.Error(), filepath.Join(dir, CAFile)) {
		t.Errorf("missing ca: got %v, want the path named", err)
	}

	if err := os.WriteFile(filepath.Join(dir, CAFile), []byte("not pem"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = LoadTLS(dir)
	if err == nil || !strings.Contains(err.Error(), "no PEM certificate") {
		t.Errorf("bad ca: got %v", err)
	}
}
