package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	vigilpb "github.com/vigilsec/vigil/gen/vigil/v1"
)

// serverBin is the real binary, built once in TestMain.
var serverBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "vigil-server-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	serverBin = filepath.Join(dir, "vigil-server")
	out, err := exec.Command("go", "build", "-o", serverBin, ".").CombinedOutput()
	code := 1
	if err == nil {
		code = m.Run()
	} else {
		fmt.Fprintf(os.Stderr, "go build: %v\n%s", err, out)
	}
	os.RemoveAll(dir)
	os.Exit(code)
}

func TestHelpDocumentsFlags(t *testing.T) {
	bin := serverBin
	out, err := exec.Command(bin, "--help").CombinedOutput()
	if err != nil {
		t.Fatalf("--help: %v\n%s", err, out)
	}
	want := []string{"--data-dir", "--listen", "--metrics", "--host", "--token-ttl",
		"--event-max-age", "--event-max-bytes", "--log-level", "127.0.0.1:7443", "admin-cert",
		"--intel-feed", "--intel-interval", "--webhook-listen", "--webhook-secret-file",
		"--export-jsonl", "--export-syslog", "--export-webhook"}
	for _, f := range serveFlags() {
		if name := "--" + f.Names()[0]; !slices.Contains(want, name) {
			want = append(want, name)
		}
	}
	for _, flag := range want {
		t.Run(flag, func(t *testing.T) {
			if !strings.Contains(string(out), flag) {
				t.Fatalf("--help does not mention %s:\n%s", flag, out)
			}
		})
	}
}

// server is a running vigil-server process.
type server struct {
	cmd  *exec.Cmd
	addr string
	exit chan error
}

var listenRE = regexp.MustCompile(`msg="server listening" addr=(\S+)`)

func start(t *testing.T, bin, dir string, args ...string) *server {
	t.Helper()
	cmd := exec.Command(bin, append([]string{"--data-dir", dir, "--listen", "127.0.0.1:0"}, args...)...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	s := &server{cmd: cmd, exit: make(chan error, 1)}
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-s.exit
	})

	addr := make(chan string, 1)
	var logs strings.Builder
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			if m := listenRE.FindStringSubmatch(sc.Text()); m != nil {
				addr <- m[1]
			}
			logs.WriteString(sc.Text() + "\n")
		}
		s.exit <- cmd.Wait()
	}()
	select {
	case s.addr = <-addr:
	case err := <-s.exit:
		s.exit <- err
		t.Fatalf("server exited before listening: %v\n%s", err, logs.String())
	case <-time.After(20 * time.Second):
		t.Fatal("server did not report its address within 20s")
	}
	return s
}

// adminClient dials with the credentials in dir/sub.
func adminClient(t *testing.T, dir, addr, sub string) vigilpb.AdminServiceClient {
	t.Helper()
	creds := filepath.Join(dir, sub)
	pair, err := tls.LoadX509KeyPair(filepath.Join(creds, "admin.crt"), filepath.Join(creds, "admin.key"))
	if err != nil {
		t.Fatal(err)
	}
	caPEM, err := os.ReadFile(filepath.Join(creds, "ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	cfg := &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{pair}, ServerName: "localhost"}
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return vigilpb.NewAdminServiceClient(conn)
}

func TestFirstStartShutdownAndCrash(t *testing.T) {
	bin := serverBin
	dir := filepath.Join(t.TempDir(), "data")
	metricsAddr := freeAddr(t)
	s := start(t, bin, dir, "--metrics", metricsAddr)

	for _, name := range []string{"ca.crt", "admin.crt", "admin.key"} {
		if _, err := os.Stat(filepath.Join(dir, "admin", name)); err != nil {
			t.Fatalf("first start did not create admin/%s: %v", name, err)
		}
	}
	fi, err := os.Stat(filepath.Join(dir, "admin", "admin.key"))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("admin.key mode %v err %v, want 0600", fi.Mode(), err)
	}

	ctx := context.Background()
	tok, err := adminClient(t, dir, s.addr, "admin").CreateToken(ctx, &vigilpb.CreateTokenRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if body := get(t, "http://"+metricsAddr+"/metrics"); !strings.Contains(body, "vigil_server_agents_online") {
		t.Fatalf("metrics lack vigil_server_agents_online:\n%.500s", body)
	}

	// SIGTERM: a clean exit.
	s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-s.exit:
		s.exit <- err
		if err != nil {
			t.Fatalf("exit after SIGTERM: %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("server still running 15s after SIGTERM")
	}

	// SIGKILL, then restart: what was acknowledged is still there.
	s = start(t, bin, dir)
	second, err := adminClient(t, dir, s.addr, "admin").CreateToken(ctx, &vigilpb.CreateTokenRequest{})
	if err != nil {
		t.Fatal(err)
	}
	s.cmd.Process.Signal(syscall.SIGKILL)
	s.exit <- <-s.exit // dead, so its badger lock is free
	s = start(t, bin, dir)
	enroll := vigilpb.NewEnrollmentServiceClient(dialNoCert(t, dir, s.addr))
	for i, token := range []string{tok.Token, second.Token} {
		_, err := enroll.Enroll(ctx, &vigilpb.EnrollRequest{Token: token, Name: "a" + string(rune('0'+i))})
		// The request carries no CSR: a stored, unused token gets past
		// validation and fails on the CSR; a lost token would fail as unknown.
		if err == nil || !strings.Contains(err.Error(), "csr_der") {
			t.Fatalf("token %d after restart: %v, want it to be known and unused", i, err)
		}
	}
}

func TestAdminCertRoles(t *testing.T) {
	bin := serverBin
	dir := filepath.Join(t.TempDir(), "data")
	s := start(t, bin, dir)
	viewerDir := filepath.Join(t.TempDir(), "viewer")
	out, err := exec.Command(bin, "admin-cert", "--data-dir", dir, "--role", "viewer", "--name", "carol",
		"--out", viewerDir).CombinedOutput()
	if err != nil {
		t.Fatalf("admin-cert: %v\n%s", err, out)
	}
	bad := exec.Command(bin, "admin-cert", "--data-dir", dir, "--role", "root", "--out", viewerDir)
	if out, err := bad.CombinedOutput(); err == nil {
		t.Fatalf("admin-cert accepted role root:\n%s", out)
	}

	viewer := adminClient(t, viewerDir, s.addr, ".")
	ctx := context.Background()
	if _, err := viewer.ListAgents(ctx, &vigilpb.ListAgentsRequest{}); err != nil {
		t.Fatalf("viewer lists agents: %v", err)
	}
	_, err = viewer.CreateToken(ctx, &vigilpb.CreateTokenRequest{})
	if status.Code(err) != codes.PermissionDenied {
		t.Fatalf("viewer creates a token: %v, want PermissionDenied", err)
	}
}

func dialNoCert(t *testing.T, dir, addr string) *grpc.ClientConn {
	t.Helper()
	caPEM, err := os.ReadFile(filepath.Join(dir, "admin", "ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(
		&tls.Config{RootCAs: pool, ServerName: "localhost"})))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func get(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}
