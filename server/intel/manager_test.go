package intel

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/vigilsec/vigil/policy"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// setCall is one SetIndicators call.
type setCall struct {
	feed string
	inds []policy.Indicator
}

// recorder is an IndicatorSetter that records calls.
type recorder struct {
	mu    sync.Mutex
	calls []setCall // guarded by mu
	ch    chan setCall
}

func newRecorder() *recorder { return &recorder{ch: make(chan setCall, 100)} }

func (r *recorder) SetIndicators(feed string, inds []policy.Indicator) {
	r.mu.Lock()
	r.calls = append(r.calls, setCall{feed, inds})
	r.mu.Unlock()
	r.ch <- setCall{feed, inds}
}

func (r *recorder) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.calls)
}

func (r *recorder) next(t *testing.T) setCall {
	t.Helper()
	select {
	case c := <-r.ch:
		return c
	case <-time.After(5 * time.Second):
		t.Fatal("no SetIndicators call within 5s")
		return setCall{}
	}
}

func discard() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func writeFile(t *testing.T, path, data string) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func TestManagerReloadKeepsPreviousSet(t *testing.T) {
	path := filepath.Join(t.TempDir(), "bad-ips.csv")
	writeFile(t, path, "ipv4,192.0.2.1,90\n")
	rec := newRecorder()
	m, err := NewManager([]Feed{{Name: "ips", Location: path}}, rec, discard(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()

	if err := m.Reload(ctx, "ips"); err != nil {
		t.Fatal(err)
	}
	first := rec.next(t)
	if first.feed != "ips" || !slices.Equal(stripMeta(first.inds), []policy.Indicator{ip("192.0.2.1/32")}) {
		t.Fatalf("first set = %+v", first)
	}

	// Unchanged content: no call.
	if err := m.Reload(ctx, "ips"); err != nil {
		t.Fatal(err)
	}
	if rec.count() != 1 {
		t.Fatalf("unchanged feed delivered again: %d calls", rec.count())
	}

	// A bad feed is rejected with file, line and field; the set stays.
	writeFile(t, path, "ipv4,192.0.2.1,90\nipv4,not-an-ip,90\n")
	err = m.Reload(ctx, "ips")
	if err == nil || !strings.Contains(err.Error(), path+": line 2: value") {
		t.Fatalf("bad feed err = %v", err)
	}
	st := m.Status()[0]
	if rec.count() != 1 || st.Err == nil || st.Indicators != 1 {
		t.Fatalf("after bad feed: calls %d, status %+v", rec.count(), st)
	}

	// A good change is delivered.
	writeFile(t, path, "ipv4,192.0.2.1,90\ncidr,198.51.100.0/24,40\n")
	if err := m.Reload(ctx, "ips"); err != nil {
		t.Fatal(err)
	}
	if got := rec.next(t); len(got.inds) != 2 || got.inds[1].Confidence != 40 || got.inds[1].ID != "line 2" {
		t.Fatalf("changed set = %+v", got)
	}
	if st := m.Status()[0]; st.Err != nil || st.Indicators != 2 || st.Loaded.IsZero() {
		t.Fatalf("status = %+v", st)
	}
}

func TestManagerRunPicksUpChangedFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "intel.json")
	writeFile(t, path, bundle(indicator("a", "[ipv4-addr:value = '192.0.2.1']", "")))
	rec := newRecorder()
	feeds := []Feed{{Name: "stix", Location: path, Interval: 10 * time.Millisecond}}
	m, err := NewManager(feeds, rec, discard(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { m.Run(ctx); close(done) }()

	if got := rec.next(t); got.inds[0].ID != "indicator--a" {
		t.Fatalf("first set = %+v", got)
	}
	writeFile(t, path, bundle(indicator("b", "[file:hashes.'SHA-256' = '"+hashA+"']", "")))
	if got := rec.next(t); len(got.inds) != 1 || got.inds[0].SHA256 != hashA || got.inds[0].Source != "stix" {
		t.Fatalf("reloaded set = %+v", got)
	}

	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
}

func TestManagerURLFeed(t *testing.T) {
	for _, tls := range []bool{false, true} {
		t.Run(map[bool]string{false: "http", true: "https"}[tls], func(t *testing.T) { testURLFeed(t, tls) })
	}
}

func testURLFeed(t *testing.T, tls bool) {
	var mu sync.Mutex
	status, body := http.StatusOK, "type,value\nsha256,"+hashA+"\n"
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		w.WriteHeader(status)
		io.WriteString(w, body)
	}))
	if tls {
		srv.StartTLS()
	} else {
		srv.Start()
	}
	defer srv.Close()

	rec := newRecorder()
	url := srv.URL + "/feed.csv"
	m, err := NewManager([]Feed{{Name: "web", Location: url}}, rec, discard(), Options{Client: srv.Client()})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Reload(context.Background(), "web"); err != nil {
		t.Fatal(err)
	}
	if got := rec.next(t); got.inds[0].SHA256 != hashA || got.inds[0].ID != "line 2" {
		t.Fatalf("set = %+v", got)
	}

	mu.Lock()
	status = http.StatusInternalServerError
	mu.Unlock()
	err = m.Reload(context.Background(), "web")
	if err == nil || !strings.Contains(err.Error(), url) || !strings.Contains(err.Error(), "500") {
		t.Fatalf("err = %v, want one naming the URL and status", err)
	}
	if rec.count() != 1 {
		t.Fatalf("failed fetch delivered a set")
	}
}

func TestLoadLimitAndFormat(t *testing.T) {
	dir := t.TempDir()
	big := filepath.Join(dir, "big.csv")
	writeFile(t, big, strings.Repeat("ipv4,192.0.2.1\n", 100))
	_, err := Load(context.Background(), Feed{Name: "big", Location: big}, nil, 64, time.Now())
	if err == nil || !strings.Contains(err.Error(), "larger than the read limit") {
		t.Fatalf("err = %v", err)
	}

	bom := filepath.Join(dir, "bom.csv")
	writeFile(t, bom, "\ufefftype,value\nipv4,192.0.2.1\n")
	res, err := Load(context.Background(), Feed{Name: "bom", Location: bom}, nil, 0, time.Now())
	if err != nil || len(res.Indicators) != 1 || len(res.Skipped) != 0 {
		t.Fatalf("byte order mark: %+v, %v", res, err)
	}

	stix := filepath.Join(dir, "stix.txt")
	writeFile(t, stix, bundle(indicator("a", "[ipv4-addr:value = '192.0.2.1']", "")))
	res, err = Load(context.Background(), Feed{Name: "s", Location: stix, Format: FormatSTIX}, nil, 0, time.Now())
	if err != nil || len(res.Indicators) != 1 {
		t.Fatalf("explicit stix format: %v, %v", res, err)
	}
	_, err = Load(context.Background(), Feed{Name: "m", Location: filepath.Join(dir, "missing.csv")}, nil, 0, time.Now())
	if err == nil || !strings.Contains(err.Error(), "missing.csv") {
		t.Fatalf("missing file err = %v", err)
	}
}

func TestNewManagerRejects(t *testing.T) {
	tests := []struct {
		name  string
		feeds []Feed
		err   string
	}{
		{name: "duplicate", feeds: []Feed{{Name: "a", Location: "x"}, {Name: "a", Location: "y"}}, err: "used twice"},
		{name: "no name", feeds: []Feed{{Location: "x"}}, err: "empty name"},
		{name: "no location", feeds: []Feed{{Name: "a"}}, err: "empty location"},
		{name: "format", feeds: []Feed{{Name: "a", Location: "x", Format: "xml"}}, err: "not csv or stix"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := NewManager(tt.feeds, newRecorder(), discard(), Options{})
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Fatalf("err = %v, want %q", err, tt.err)
			}
		})
	}
}
