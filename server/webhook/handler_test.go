package webhook

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	vigilpb "github.com/vigilsec/vigil/gen/vigil/v1"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

var secret = []byte("0123456789abcdef-test-secret")

// fakeEngine records reports and returns a level, or err.
type fakeEngine struct {
	mu   sync.Mutex
	reqs []*vigilpb.ReportRequest // guarded by mu
	err  error
}

func (e *fakeEngine) Report(_ context.Context, req *vigilpb.ReportRequest) (*vigilpb.ReportResponse, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.err != nil {
		return nil, e.err
	}
	e.reqs = append(e.reqs, req)
	return &vigilpb.ReportResponse{Level: "low"}, nil
}

func (e *fakeEngine) reports() []*vigilpb.ReportRequest {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.reqs
}

var now = time.Unix(1_800_000_000, 0)

func newHandler(t *testing.T, eng Reporter) *Handler {
	t.Helper()
	h, err := NewHandler(secret, eng, slog.New(slog.NewTextHandler(io.Discard, nil)),
		Options{MaxBody: 4096, Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// signed builds a request signed at ts.
func signed(body string, ts int64) *http.Request {
	r := httptest.NewRequest(http.MethodPost, "/v1/results", strings.NewReader(body))
	r.Header.Set(HeaderTimestamp, strconv.FormatInt(ts, 10))
	r.Header.Set(HeaderSignature, Sign(secret, ts, []byte(body)))
	return r
}

const oneResult = `{"entity":"device/laptop-7","level":"untrusted","severity":"high",` +
	`"source":"edr-x","reason":"ransomware behaviour","ttl_seconds":600}`

func TestHandlerAuthentication(t *testing.T) {
	ts := now.Unix()
	tests := []struct {
		name   string
		req    func() *http.Request
		status int
		errSub string
	}{
		{name: "valid", req: func() *http.Request { return signed(oneResult, ts) }, status: 200},
		{name: "skew inside window", req: func() *http.Request { return signed(oneResult, ts-299) }, status: 200},
		{name: "missing headers", req: func() *http.Request {
			return httptest.NewRequest(http.MethodPost, "/", strings.NewReader(oneResult))
		}, status: 401, errSub: "missing"},
		{name: "missing signature", req: func() *http.Request {
			r := signed(oneResult, ts)
			r.Header.Del(HeaderSignature)
			return r
		}, status: 401, errSub: "missing"},
		{name: "bad signature", req: func() *http.Request {
			r := signed(oneResult, ts)
			r.Header.Set(HeaderSignature, Sign([]byte("another-secret-of-16+"), ts, []byte(oneResult)))
			return r
		}, status: 401, errSub: "does not match"},
		{name: "signature without prefix", req: func() *http.Request {
			r := signed(oneResult, ts)
			r.Header.Set(HeaderSignature, strings.TrimPrefix(r.Header.Get(HeaderSignature), "sha256="))
			return r
		}, status: 401, errSub: "does not match"},
		{name: "body altered", req: func() *http.Request {
			r := signed(oneResult, ts)
			r.Body = io.NopCloser(strings.NewReader(strings.Replace(oneResult, "high", "info", 1)))
			return r
		}, status: 401, errSub: "does not match"},
		{name: "timestamp altered", req: func() *http.Request {
			r := signed(oneResult, ts)
			r.Header.Set(HeaderTimestamp, strconv.FormatInt(ts-1, 10))
			return r
		}, status: 401, errSub: "does not match"},
		{name: "stale", req: func() *http.Request { return signed(oneResult, ts-301) }, status: 401, errSub: "window"},
		{name: "future", req: func() *http.Request { return signed(oneResult, ts+301) }, status: 401, errSub: "window"},
		{name: "timestamp not a number", req: func() *http.Request {
			r := signed(oneResult, ts)
			r.Header.Set(HeaderTimestamp, "yesterday")
			return r
		}, status: 401, errSub: "unix seconds"},
		{name: "get", req: func() *http.Request { return httptest.NewRequest(http.MethodGet, "/", nil) }, status: 405},
		{name: "too large", req: func() *http.Request {
			return signed(`{"entity":"device/a","reason":"`+strings.Repeat("x", 5000)+`"}`, ts)
		}, status: 413},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			eng := &fakeEngine{}
			w := httptest.NewRecorder()
			newHandler(t, eng).ServeHTTP(w, tt.req())
			if w.Code != tt.status {
				t.Fatalf("status = %d, want %d (body %s)", w.Code, tt.status, w.Body)
			}
			if tt.status != 200 {
				if len(eng.reports()) != 0 {
					t.Fatal("refused request reached the engine")
				}
				if !strings.Contains(w.Body.String(), tt.errSub) {
					t.Fatalf("body %s, want %q", w.Body, tt.errSub)
				}
			}
		})
	}
}

func TestHandlerReportsResults(t *testing.T) {
	eng := &fakeEngine{}
	h := newHandler(t, eng)
	list := `[` + oneResult + `,{"entity":"process/laptop-7/4242@99","severity":"critical","source":"ids","reason":"c2"}]`
	w := httptest.NewRecorder()
	h.ServeHTTP(w, signed(list, now.Unix()))
	if w.Code != 200 {
		t.Fatalf("status %d: %s", w.Code, w.Body)
	}

	want := []*vigilpb.ReportRequest{
		{Entity: "device/laptop-7", Level: "untrusted", Severity: "high", Source: "edr-x",
			Reason: "ransomware behaviour", TtlSeconds: 600},
		{Entity: "process/laptop-7/4242@99", Severity: "critical", Source: "ids", Reason: "c2"},
	}
	got := eng.reports()
	if len(got) != len(want) {
		t.Fatalf("reports = %v", got)
	}
	for i := range want {
		if !proto.Equal(got[i], want[i]) {
			t.Errorf("report %d = %v, want %v", i, got[i], want[i])
		}
	}
	var resp struct {
		Accepted int `json:"accepted"`
		Results  []resultLevel
	}
	if err := json.Unmarshal(w.Body.Bytes(), &resp); err != nil || resp.Accepted != 2 ||
		resp.Results[0] != (resultLevel{Entity: "device/laptop-7", Level: "low"}) {
		t.Fatalf("response %s (%v)", w.Body, err)
	}

	// The same signed request again is a replay.
	w = httptest.NewRecorder()
	h.ServeHTTP(w, signed(list, now.Unix()))
	if w.Code != http.StatusConflict || len(eng.reports()) != 2 {
		t.Fatalf("replay: status %d, reports %d", w.Code, len(eng.reports()))
	}
}

func TestHandlerRejectsBadResults(t *testing.T) {
	tests := []struct {
		name   string
		body   string
		errSub string
	}{
		{name: "empty", body: "", errSub: "empty body"},
		{name: "not json", body: "entity=device/a", errSub: "decode result"},
		{name: "unknown field", body: `{"entity":"device/a","severity":"low","source":"s","reason":"r","score":9}`, errSub: `unknown field \"score\"`},
		{name: "bad kind", body: `{"entity":"host/a","severity":"low","source":"s","reason":"r"}`, errSub: "entity"},
		{name: "no name", body: `{"entity":"device/","severity":"low","source":"s","reason":"r"}`, errSub: "entity"},
		{name: "bad severity", body: `{"entity":"device/a","severity":"urgent","source":"s","reason":"r"}`, errSub: "severity"},
		{name: "no source", body: `{"entity":"device/a","severity":"low","reason":"r"}`, errSub: "source: missing"},
		{name: "no reason", body: `{"entity":"device/a","severity":"low","source":"s"}`, errSub: "reason: missing"},
		{name: "negative ttl", body: `{"entity":"device/a","severity":"low","source":"s","reason":"r","ttl_seconds":-1}`, errSub: "ttl_seconds"},
		{name: "second of list bad", body: `[` + oneResult + `,{"entity":"device/a"}]`, errSub: "results[1]: severity"},
		{name: "empty list", body: `[]`, errSub: "0 results"},
		{name: "trailing", body: oneResult + `{}`, errSub: "trailing"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			eng := &fakeEngine{}
			w := httptest.NewRecorder()
			newHandler(t, eng).ServeHTTP(w, signed(tt.body, now.Unix()))
			if w.Code != 400 || !strings.Contains(w.Body.String(), tt.errSub) {
				t.Fatalf("status %d body %s, want 400 with %q", w.Code, w.Body, tt.errSub)
			}
			if len(eng.reports()) != 0 {
				t.Fatal("rejected body reached the engine")
			}
		})
	}
}

func TestHandlerEngineErrors(t *testing.T) {
	tests := []struct {
		name   string
		err    error
		status int
		hidden string // text that must not reach the caller
	}{
		{name: "invalid level", err: status.Error(codes.InvalidArgument, "unknown level \"x\""), status: 422},
		{name: "unknown entity", err: status.Error(codes.NotFound, "no such entity"), status: 404},
		{name: "busy", err: status.Error(codes.Unavailable, "store closed"), status: 503, hidden: "store closed"},
		{name: "internal", err: io.ErrUnexpectedEOF, status: 500, hidden: "unexpected EOF"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := httptest.NewRecorder()
			newHandler(t, &fakeEngine{err: tt.err}).ServeHTTP(w, signed(oneResult, now.Unix()))
			if w.Code != tt.status {
				t.Fatalf("status %d, want %d", w.Code, tt.status)
			}
			if tt.hidden != "" && strings.Contains(w.Body.String(), tt.hidden) {
				t.Fatalf("internal text leaked: %s", w.Body)
			}
		})
	}
}

func TestNewHandlerShortSecret(t *testing.T) {
	if _, err := NewHandler([]byte("short"), &fakeEngine{}, slog.Default(), Options{}); err == nil {
		t.Fatal("short secret accepted")
	}
}

// selfSigned returns a certificate for 127.0.0.1 and a pool trusting it.
func selfSigned(t *testing.T) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "vigil-server"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, pool
}

func TestServeTLS(t *testing.T) {
	cert, pool := selfSigned(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	eng := &fakeEngine{}
	h, err := NewHandler(secret, eng, slog.New(slog.NewTextHandler(io.Discard, nil)), Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Serve(ctx, ln, h, cert, slog.New(slog.NewTextHandler(io.Discard, nil))) }()

	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	defer client.CloseIdleConnections()
	ts := time.Now().Unix()
	req, _ := http.NewRequest(http.MethodPost, "https://"+ln.Addr().String()+"/", bytes.NewReader([]byte(oneResult)))
	req.Header.Set(HeaderTimestamp, strconv.FormatInt(ts, 10))
	req.Header.Set(HeaderSignature, Sign(secret, ts, []byte(oneResult)))
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || len(eng.reports()) != 1 {
		t.Fatalf("status %d, reports %d", resp.StatusCode, len(eng.reports()))
	}

	// Plain HTTP is refused by the TLS listener.
	plain, err := http.Post("http://"+ln.Addr().String()+"/", "application/json", strings.NewReader(oneResult))
	if err == nil {
		plain.Body.Close()
		if plain.StatusCode == 200 {
			t.Fatal("plain HTTP accepted")
		}
	}
	http.DefaultClient.CloseIdleConnections()

	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Serve: %v", err)
	}
}
