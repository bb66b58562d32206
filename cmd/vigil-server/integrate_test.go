package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/vigilsec/vigil/server/webhook"
)

const testSecret = "integration-secret-0123456789"

// writeSecret writes a webhook secret file with mode perm.
func writeSecret(t *testing.T, perm os.FileMode) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(path, []byte(testSecret+"\n"), perm); err != nil {
		t.Fatal(err)
	}
	return path
}

// postResult posts body to the webhook at addr, signed with secret, trusting
// the server's CA, and returns the status code.
func postResult(t *testing.T, dir, addr, secret, body string) int {
	t.Helper()
	caPEM, err := os.ReadFile(filepath.Join(dir, "admin", "ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	client := &http.Client{Timeout: 5 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	defer client.CloseIdleConnections()

	req, err := http.NewRequest(http.MethodPost, "https://"+addr+"/", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	ts := time.Now().Unix()
	req.Header.Set(webhook.HeaderTimestamp, strconv.FormatInt(ts, 10))
	req.Header.Set(webhook.HeaderSignature, webhook.Sign([]byte(secret), ts, []byte(body)))
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, resp.Body)
	return resp.StatusCode
}

func TestIntegrationsWired(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	feed := filepath.Join(t.TempDir(), "hashes.csv")
	hash := strings.Repeat("ab", 32)
	if err := os.WriteFile(feed, []byte("sha256,"+hash+",90\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	jsonl := filepath.Join(t.TempDir(), "events.jsonl")
	metricsAddr, hookAddr := freeAddr(t), freeAddr(t)
	batches := batchReceiver(t)
	secretFile := writeSecret(t, 0o600)
	s := start(t, serverBin, dir, "--metrics", metricsAddr,
		"--intel-feed", "bad-hashes="+feed+",csv,every=1m",
		"--webhook-listen", hookAddr, "--webhook-secret-file", secretFile,
		"--export-jsonl", jsonl, "--export-webhook", batches.URL, "--export-webhook-secret-file", secretFile)

	// Signed results are recorded; a wrong signature is refused.
	result := `{"entity":"user/alice","severity":"high","source":"edr-test","reason":"wired"}`
	if code := postResult(t, dir, hookAddr, testSecret, result); code != http.StatusOK {
		t.Fatalf("signed result: status %d, want 200", code)
	}
	if code := postResult(t, dir, hookAddr, "not-the-secret-at-all", result); code != http.StatusUnauthorized {
		t.Fatalf("badly signed result: status %d, want 401", code)
	}

	// The integrations' metrics are on the server's registry; the feed
	// loads in the background.
	deadline := time.Now().Add(5 * time.Second)
	body := get(t, "http://"+metricsAddr+"/metrics")
	for !strings.Contains(body, `vigil_intel_feed_indicators{feed="bad-hashes"} 1`) && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
		body = get(t, "http://"+metricsAddr+"/metrics")
	}
	for _, line := range []string{
		`vigil_intel_feed_indicators{feed="bad-hashes"} 1`,
		`vigil_intel_feed_failing{feed="bad-hashes"} 0`,
		`vigil_webhook_requests_total{code="200"} 1`,
		`vigil_webhook_requests_total{code="401"} 1`,
		`vigil_webhook_results_total 1`,
		`vigil_server_agents_online 0`,
	} {
		if !strings.Contains(body, line) {
			t.Errorf("metrics lack %q", line)
		}
	}

	// SIGTERM flushes the exporter: the finding is in the file as OCSF.
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
	if !hasFinding(t, jsonl, "user/alice") {
		data, _ := os.ReadFile(jsonl)
		t.Fatalf("export file has no detection finding for user/alice:\n%s", data)
	}
	select {
	case <-batches.finding:
	case <-time.After(5 * time.Second):
		t.Fatal("the export webhook received no signed batch with the finding")
	}
}

// receiver is an HTTP endpoint on loopback taking exported batches.
type receiver struct {
	URL     string
	finding chan struct{} // closed at the first signed batch with user/alice's finding
}

// batchReceiver accepts signed batches (JSON arrays of OCSF records) and
// refuses unsigned ones.
func batchReceiver(t *testing.T) *receiver {
	t.Helper()
	r := &receiver{finding: make(chan struct{})}
	var once sync.Once
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		ts, _ := strconv.ParseInt(req.Header.Get(webhook.HeaderTimestamp), 10, 64)
		if req.Header.Get(webhook.HeaderSignature) != webhook.Sign([]byte(testSecret), ts, body) {
			http.Error(w, "bad signature", http.StatusUnauthorized)
			return
		}
		var recs []struct {
			ClassUID int            `json:"class_uid"`
			Unmapped map[string]any `json:"unmapped"`
		}
		if err := json.Unmarshal(body, &recs); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		for _, rec := range recs {
			if rec.ClassUID == 2004 && rec.Unmapped["entity"] == "user/alice" {
				once.Do(func() { close(r.finding) })
			}
		}
	}))
	t.Cleanup(srv.Close)
	r.URL = srv.URL
	return r
}

// hasFinding reports whether the JSON-lines file holds an OCSF Detection
// Finding about entity.
func hasFinding(t *testing.T, path, entity string) bool {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range bytes.Split(bytes.TrimSpace(data), []byte("\n")) {
		var rec struct {
			ClassUID int            `json:"class_uid"`
			Unmapped map[string]any `json:"unmapped"`
		}
		if err := json.Unmarshal(line, &rec); err != nil {
			t.Fatalf("export line %q: %v", line, err)
		}
		if rec.ClassUID == 2004 && rec.Unmapped["entity"] == entity {
			return true
		}
	}
	return false
}

func TestIntegrationFlagsRejected(t *testing.T) {
	tests := []struct {
		name   string
		args   []string
		errSub string
	}{
		{name: "webhook without secret", args: []string{"--webhook-listen", "127.0.0.1:0"},
			errSub: "--webhook-listen needs --webhook-secret-file"},
		{name: "readable secret", args: []string{"--webhook-listen", "127.0.0.1:0",
			"--webhook-secret-file", writeSecret(t, 0o644)}, errSub: "lets other users read it"},
		{name: "feed without location", args: []string{"--intel-feed", "bad="},
			errSub: "--intel-feed"},
		{name: "feed with bad interval", args: []string{"--intel-feed", "bad=/x.csv,every=soon"},
			errSub: `every="soon"`},
		{name: "same feed twice", args: []string{"--intel-feed", "a=/x.csv", "--intel-feed", "a=/y.csv"},
			errSub: "feed a: name used twice"},
		{name: "syslog scheme", args: []string{"--export-syslog", "ftp://127.0.0.1:514"},
			errSub: "ftp"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "data")
			args := append([]string{"--data-dir", dir, "--listen", "127.0.0.1:0"}, tt.args...)
			cmd := exec.Command(serverBin, args...)
			timer := time.AfterFunc(20*time.Second, func() { cmd.Process.Kill() })
			defer timer.Stop()
			out, err := cmd.CombinedOutput()
			if err == nil || !strings.Contains(string(out), tt.errSub) {
				t.Fatalf("exit %v, output:\n%s\nwant a failure naming %q", err, out, tt.errSub)
			}
		})
	}
}

// TestServeLeavesNoGoroutines runs the server in this process with every
// integration on, stops it through its context, and requires every
// goroutine it started (feeds, webhook, export sinks, gRPC) to be gone.
func TestServeLeavesNoGoroutines(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	dir := filepath.Join(t.TempDir(), "data")
	feed := filepath.Join(t.TempDir(), "hashes.csv")
	if err := os.WriteFile(feed, []byte("sha256,"+strings.Repeat("cd", 32)+",90\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	syslog, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer syslog.Close()
	hookAddr := freeAddr(t)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		done <- newApp().RunContext(ctx, []string{"vigil-server", "--data-dir", dir, "--listen", "127.0.0.1:0",
			"--log-level", "error", "--intel-feed", "hashes=" + feed,
			"--webhook-listen", hookAddr, "--webhook-secret-file", writeSecret(t, 0o600),
			"--export-jsonl", filepath.Join(t.TempDir(), "events.jsonl"),
			"--export-syslog", "tcp://" + syslog.Addr().String()})
	}()
	waitListening(t, hookAddr, done)
	result := `{"entity":"user/bob","severity":"low","source":"edr-test","reason":"leak check"}`
	if code := postResult(t, dir, hookAddr, testSecret, result); code != http.StatusOK {
		t.Fatalf("signed result: status %d", code)
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("serve: %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("serve still running 15s after its context ended")
	}
}

// waitListening waits until addr accepts connections or the server ends.
func waitListening(t *testing.T, addr string, done <-chan error) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond); err == nil {
			c.Close()
			return
		}
		select {
		case err := <-done:
			t.Fatalf("server ended before listening: %v", err)
		case <-time.After(50 * time.Millisecond):
		}
	}
	t.Fatalf("nothing listens on %s after 10s", addr)
}
