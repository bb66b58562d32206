//go:build integration

package integrate

import (
	"crypto/tls"
	"crypto/x509"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vigilsec/vigil/internal/testenv"
	"github.com/vigilsec/vigil/server/webhook"
	"github.com/vigilsec/vigil/tests/harness"
)

const hookSecret = "webhook-test-secret-0123456789"

// TestWebhookResultLowersDevice posts signed results to the server's HTTPS
// webhook: an authentic one lowers the device's level as vigilctl shows it;
// one signed with another secret is refused with 401 and changes nothing.
func TestWebhookResultLowersDevice(t *testing.T) {
	testenv.RequireRoot(t)
	secretFile := filepath.Join(t.TempDir(), "secret")
	writeFile(t, secretFile, hookSecret+"\n", 0o600)
	hookAddr := harness.FreeAddr(t)
	srv := harness.StartServerIn(t, "", harness.FreeAddr(t),
		"--webhook-listen", hookAddr, "--webhook-secret-file", secretFile)
	applyPolicy(t, srv)
	srv.StartAgent(t, "hook-host", testenv.NewCgroup(t))
	if got := srv.EntityLevel("device/hook-host"); got != "medium" {
		t.Fatalf("device/hook-host starts at %q, want medium", got)
	}
	client := webhookClient(t, srv)

	// An authentic result sets the level it names.
	lower := `{"entity":"device/hook-host","level":"low","severity":"high",` +
		`"source":"edr-test","reason":"credential theft on the host","ttl_seconds":600}`
	code, body := postSigned(t, client, hookAddr, hookSecret, lower)
	if code != http.StatusOK || !strings.Contains(body, `"level":"low"`) {
		t.Fatalf("signed result: %d %s, want 200 with level low", code, body)
	}
	if got := srv.EntityLevel("device/hook-host"); got != "low" {
		t.Fatalf("after the signed result device/hook-host is %q, want low", got)
	}

	// A result signed with another secret is refused and changes nothing.
	untrusted := strings.Replace(lower, `"low"`, `"untrusted"`, 1)
	code, body = postSigned(t, client, hookAddr, "another-secret-0123456789", untrusted)
	if code != http.StatusUnauthorized {
		t.Fatalf("badly signed result: %d %s, want 401", code, body)
	}
	if got := srv.EntityLevel("device/hook-host"); got != "low" {
		t.Fatalf("after the refused result device/hook-host is %q, want low", got)
	}
}

// webhookClient trusts the server's CA, as an external system would.
func webhookClient(t *testing.T, srv *harness.Server) *http.Client {
	t.Helper()
	caPEM, err := os.ReadFile(filepath.Join(srv.Creds, "ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		t.Fatal("no certificate in ca.crt")
	}
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 5 * time.Second}
}

// postSigned posts body to the webhook signed with secret and returns the
// status code and response body.
func postSigned(t *testing.T, client *http.Client, addr, secret, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, "https://"+addr+"/v1/results", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	ts := time.Now().Unix()
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set(webhook.HeaderTimestamp, strconv.FormatInt(ts, 10))
	req.Header.Set(webhook.HeaderSignature, webhook.Sign([]byte(secret), ts, []byte(body)))
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("post result: %v", err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(data)
}
