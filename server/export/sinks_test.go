package export

import (
	"bufio"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"

	vigilpb "github.com/vigilsec/vigil/gen/vigil/v1"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// events returns n distinct connect events.
func events(n int) []*vigilpb.Event {
	out := make([]*vigilpb.Event, n)
	for i := range out {
		out[i] = &vigilpb.Event{Seq: uint64(i + 1), Kind: vigilpb.EventKind_EVENT_KIND_CONNECT,
			TimeUnixNano: t0.UnixNano(), Agent: "laptop-7", Process: procA(),
			Connection: &vigilpb.Connection{Protocol: vigilpb.Protocol_PROTOCOL_TCP,
				RemoteAddress: "127.0.0.1", RemotePort: 8080, Verdict: vigilpb.Verdict_VERDICT_DENY}}
	}
	return out
}

func closeExporter(t *testing.T, e *Exporter) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := e.Close(ctx); err != nil {
		t.Fatalf("close: %v", err)
	}
}

func TestFileSinkRotation(t *testing.T) {
	path := filepath.Join(t.TempDir(), "events.jsonl")
	sink, err := NewFileSink(path, 4096, 2)
	if err != nil {
		t.Fatal(err)
	}
	e, err := New(quiet(), Options{}, sink)
	if err != nil {
		t.Fatal(err)
	}
	const n = 60
	for _, ev := range events(n) {
		e.Publish(ev)
	}
	closeExporter(t, e)

	if _, err := os.Stat(path + ".3"); !os.IsNotExist(err) {
		t.Fatalf("%s.3 exists (keep is 2): %v", path, err)
	}
	var seqs []float64
	for _, name := range []string{path + ".2", path + ".1", path} {
		st, err := os.Stat(name)
		if err != nil {
			t.Fatal(err)
		}
		if st.Size() > 4096 || st.Mode().Perm() != 0o600 {
			t.Errorf("%s: size %d mode %v", name, st.Size(), st.Mode())
		}
		seqs = append(seqs, readSeqs(t, name)...)
	}
	// The newest records are kept, in order, ending with the last one.
	if len(seqs) == 0 || seqs[len(seqs)-1] != n {
		t.Fatalf("last sequence %v, want %d", seqs, n)
	}
	for i := 1; i < len(seqs); i++ {
		if seqs[i] != seqs[i-1]+1 {
			t.Fatalf("sequences not consecutive: %v", seqs)
		}
	}
	if d := e.Dropped()[sink.Name()]; d != 0 {
		t.Fatalf("dropped %d", d)
	}
}

// readSeqs parses a JSON-lines file and returns metadata.sequence of each line.
func readSeqs(t *testing.T, name string) []float64 {
	t.Helper()
	f, err := os.Open(name)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []float64
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("%s: line is not JSON: %v", name, err)
		}
		if get(m, "class_uid") != 4001.0 {
			t.Fatalf("%s: class_uid %v", name, get(m, "class_uid"))
		}
		out = append(out, get(m, "metadata", "sequence").(float64))
	}
	return out
}

// rfc5424 matches <PRI>1 TIMESTAMP HOSTNAME APP PROCID MSGID [SD] MSG.
var rfc5424 = regexp.MustCompile(`^<(\d{1,3})>1 (\S+) (\S+) (\S+) (\S+) (\S+) (\[[^ \]]+(?: [a-z_]+="(?:[^"\\\]]|\\.)*")*\]) (.*)$`)

// syslogMessage is a parsed RFC 5424 message.
type syslogMessage struct {
	pri                      int
	timestamp                time.Time
	host, app, procID, msgID string
	sd                       map[string]string
	msg                      map[string]any
}

func parseSyslog(t *testing.T, frame string) syslogMessage {
	t.Helper()
	m := rfc5424.FindStringSubmatch(frame)
	if m == nil {
		t.Fatalf("not an RFC 5424 message: %q", frame)
	}
	var out syslogMessage
	out.pri, _ = strconv.Atoi(m[1])
	ts, err := time.Parse(time.RFC3339Nano, m[2])
	if err != nil {
		t.Fatalf("timestamp %q: %v", m[2], err)
	}
	out.timestamp, out.host, out.app, out.procID, out.msgID = ts, m[3], m[4], m[5], m[6]
	out.sd = map[string]string{}
	params := regexp.MustCompile(`([a-z_]+)="((?:[^"\\]|\\.)*)"`).FindAllStringSubmatch(m[7], -1)
	for _, p := range params {
		out.sd[p[1]] = p[2]
	}
	if !strings.HasPrefix(m[7], "[vigil@32473 ") {
		t.Fatalf("SD-ID in %q", m[7])
	}
	if err := json.Unmarshal([]byte(m[8]), &out.msg); err != nil {
		t.Fatalf("MSG is not JSON: %v", err)
	}
	return out
}

// readOctetFrames reads n octet-counted frames from r.
func readOctetFrames(t *testing.T, r *bufio.Reader, n int) []string {
	t.Helper()
	var frames []string
	for range n {
		lenText, err := r.ReadString(' ')
		if err != nil {
			t.Fatalf("frame length: %v", err)
		}
		size, err := strconv.Atoi(strings.TrimSuffix(lenText, " "))
		if err != nil {
			t.Fatalf("frame length %q: %v", lenText, err)
		}
		buf := make([]byte, size)
		if _, err := io.ReadFull(r, buf); err != nil {
			t.Fatal(err)
		}
		frames = append(frames, string(buf))
	}
	return frames
}

func checkSyslog(t *testing.T, frame string, seq int) {
	t.Helper()
	msg := parseSyslog(t, frame)
	want := syslogMessage{pri: 16*8 + 4, host: "vigil-host", app: "vigil", procID: strconv.Itoa(os.Getpid()), msgID: "connect"}
	if msg.pri != want.pri || msg.host != want.host || msg.app != want.app || msg.procID != want.procID || msg.msgID != want.msgID {
		t.Fatalf("header %+v, want %+v", msg, want)
	}
	if !msg.timestamp.Equal(t0.Truncate(time.Millisecond)) {
		t.Fatalf("timestamp %v, want %v", msg.timestamp, t0)
	}
	sd := map[string]string{"class_uid": "4001", "type_uid": "400105", "severity_id": "3",
		"agent": "laptop-7", "seq": strconv.Itoa(seq)}
	for k, v := range sd {
		if msg.sd[k] != v {
			t.Errorf("SD %s = %q, want %q", k, msg.sd[k], v)
		}
	}
	if get(msg.msg, "class_uid") != 4001.0 || get(msg.msg, "metadata", "sequence") != float64(seq) {
		t.Fatalf("MSG %v", msg.msg)
	}
}

func TestSyslogStream(t *testing.T) {
	tests := []struct {
		name    string
		network string
	}{
		{name: "tcp", network: "tcp"},
		{name: "unix", network: "unix"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			addr := "127.0.0.1:0"
			if tt.network == "unix" {
				addr = filepath.Join(t.TempDir(), "syslog.sock")
			}
			ln, err := net.Listen(tt.network, addr)
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			target := tt.network + "://" + ln.Addr().String()
			if tt.network == "unix" {
				target = "unix://" + addr
			}
			sink, err := NewSyslogSink(target, SyslogOptions{Hostname: "vigil-host"})
			if err != nil {
				t.Fatal(err)
			}
			e, err := New(quiet(), Options{}, sink)
			if err != nil {
				t.Fatal(err)
			}

			for _, ev := range events(3) {
				e.Publish(ev)
			}
			conn, err := ln.Accept()
			if err != nil {
				t.Fatal(err)
			}
			r := bufio.NewReader(conn)
			for i, frame := range readOctetFrames(t, r, 3) {
				checkSyslog(t, frame, i+1)
			}

			// The receiver restarts its connection; the sink reconnects.
			conn.Close()
			time.Sleep(50 * time.Millisecond)
			evs := events(6)
			for _, ev := range evs[3:] {
				e.Publish(ev)
				time.Sleep(20 * time.Millisecond)
			}
			conn2, err := ln.Accept()
			if err != nil {
				t.Fatal(err)
			}
			defer conn2.Close()
			conn2.SetReadDeadline(time.Now().Add(5 * time.Second))
			frames := readOctetFrames(t, bufio.NewReader(conn2), 1)
			checkSyslog(t, frames[0], seqOf(t, frames[0]))
			closeExporter(t, e)
		})
	}
}

func seqOf(t *testing.T, frame string) int {
	t.Helper()
	n, _ := strconv.Atoi(parseSyslog(t, frame).sd["seq"])
	return n
}

func TestSyslogDatagram(t *testing.T) {
	tests := []struct {
		name    string
		network string
	}{
		{name: "udp", network: "udp"},
		{name: "unixgram", network: "unixgram"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			addr, target := "127.0.0.1:0", ""
			if tt.network == "unixgram" {
				addr = filepath.Join(t.TempDir(), "syslog.sock")
			}
			pc, err := net.ListenPacket(tt.network, addr)
			if err != nil {
				t.Fatal(err)
			}
			defer pc.Close()
			target = tt.network + "://" + pc.LocalAddr().String()
			if tt.network == "unixgram" {
				target = "unixgram://" + addr
			}
			sink, err := NewSyslogSink(target, SyslogOptions{Hostname: "vigil-host"})
			if err != nil {
				t.Fatal(err)
			}
			e, err := New(quiet(), Options{}, sink)
			if err != nil {
				t.Fatal(err)
			}
			for _, ev := range events(3) {
				e.Publish(ev)
			}
			buf := make([]byte, 70000)
			pc.SetReadDeadline(time.Now().Add(5 * time.Second))
			for i := range 3 {
				n, _, err := pc.ReadFrom(buf)
				if err != nil {
					t.Fatal(err)
				}
				checkSyslog(t, string(buf[:n]), i+1)
			}
			closeExporter(t, e)
		})
	}
}

func TestSyslogEscapesStructuredData(t *testing.T) {
	sink, err := NewSyslogSink("udp://127.0.0.1:9", SyslogOptions{Hostname: "h o\x01st", AppName: "app"})
	if err != nil {
		t.Fatal(err)
	}
	rec := Mapper{}.Map(&vigilpb.Event{Kind: vigilpb.EventKind_EVENT_KIND_LEVEL, Agent: `a"b]c\d`, TimeUnixNano: t0.UnixNano()})
	got := string(sink.Format(Item{Record: rec, JSON: []byte(`{}`)}))
	if !strings.Contains(got, ` agent="a\"b\]c\\d"`) || !strings.Contains(got, " host app ") {
		t.Fatalf("message %q", got)
	}
	msg := parseSyslog(t, got)
	if msg.msgID != "level" || msg.pri != 16*8+6 {
		t.Fatalf("parsed %+v", msg)
	}
}

func TestNewSyslogSinkRejects(t *testing.T) {
	for _, target := range []string{"tls://127.0.0.1:6514", "tcp://", "udp", "unix://"} {
		if _, err := NewSyslogSink(target, SyslogOptions{}); err == nil {
			t.Errorf("%q accepted", target)
		}
	}
}

// webhookReceiver is an httptest server that fails the first failures
// requests with status, then accepts and records batches.
type webhookReceiver struct {
	mu       sync.Mutex
	failures int           // guarded by mu
	status   int           // guarded by mu
	batches  [][]any       // guarded by mu
	headers  []http.Header // guarded by mu
	bodies   [][]byte      // guarded by mu
	calls    atomic.Int32
}

func (w *webhookReceiver) ServeHTTP(rw http.ResponseWriter, r *http.Request) {
	w.calls.Add(1)
	body, _ := io.ReadAll(r.Body)
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.failures > 0 {
		w.failures--
		rw.WriteHeader(w.status)
		return
	}
	var batch []any
	if r.Method != http.MethodPost || r.Header.Get("Content-Type") != "application/json" ||
		json.Unmarshal(body, &batch) != nil {
		rw.WriteHeader(http.StatusBadRequest)
		return
	}
	w.batches = append(w.batches, batch)
	w.headers = append(w.headers, r.Header.Clone())
	w.bodies = append(w.bodies, body)
}

func (w *webhookReceiver) records() []any {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []any
	for _, b := range w.batches {
		out = append(out, b...)
	}
	return out
}

func TestHTTPSinkRetriesAndSigns(t *testing.T) {
	recv := &webhookReceiver{failures: 2, status: http.StatusServiceUnavailable}
	srv := httptest.NewServer(recv)
	defer srv.Close()
	secret := []byte("export-secret")
	sink, err := NewHTTPSink(srv.URL+"/ingest", HTTPOptions{Client: srv.Client(), Secret: secret, Backoff: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	e, err := New(quiet(), Options{}, sink)
	if err != nil {
		t.Fatal(err)
	}
	for _, ev := range events(5) {
		e.Publish(ev)
	}
	closeExporter(t, e)

	recs := recv.records()
	if len(recs) != 5 || recv.calls.Load() < 3 {
		t.Fatalf("records %d after %d calls, want 5 after at least 3", len(recs), recv.calls.Load())
	}
	for i, r := range recs {
		if get(r, "class_uid") != 4001.0 || get(r, "metadata", "sequence") != float64(i+1) {
			t.Fatalf("record %d: %v", i, r)
		}
	}
	recv.mu.Lock()
	defer recv.mu.Unlock()
	for i, h := range recv.headers {
		mac := hmac.New(sha256.New, secret)
		fmt.Fprintf(mac, "%s.%s", h.Get("X-Vigil-Timestamp"), recv.bodies[i])
		if h.Get("X-Vigil-Signature") != "sha256="+hex.EncodeToString(mac.Sum(nil)) {
			t.Fatalf("batch %d signature %q does not verify", i, h.Get("X-Vigil-Signature"))
		}
	}
	if d := e.Dropped()[sink.Name()]; d != 0 {
		t.Fatalf("dropped %d", d)
	}
}

func TestHTTPSinkDropsOnClientError(t *testing.T) {
	recv := &webhookReceiver{failures: 100, status: http.StatusBadRequest}
	srv := httptest.NewServer(recv)
	defer srv.Close()
	sink, err := NewHTTPSink(srv.URL, HTTPOptions{Client: srv.Client(), Backoff: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	e, err := New(quiet(), Options{Registerer: reg}, sink)
	if err != nil {
		t.Fatal(err)
	}
	e.Publish(events(1)[0])
	closeExporter(t, e)
	if recv.calls.Load() != 1 {
		t.Fatalf("400 was retried: %d calls", recv.calls.Load())
	}
	if d := e.Dropped()[sink.Name()]; d != 1 {
		t.Fatalf("dropped %d, want 1", d)
	}
	if got := counterValue(t, reg, sink.Name(), DropWriteFailed); got != 1 {
		t.Fatalf("counter = %v", got)
	}
}

// stuckSink blocks in Write until ctx is done, like a sink whose peer hangs.
type stuckSink struct {
	entered chan struct{}
	once    sync.Once
}

func (s *stuckSink) Name() string { return "stuck" }

func (s *stuckSink) Write(ctx context.Context, items []Item) (int, error) {
	s.once.Do(func() { close(s.entered) })
	<-ctx.Done()
	return len(items), ctx.Err()
}

func (s *stuckSink) Close() error { return nil }

func TestPublishNeverBlocks(t *testing.T) {
	stuck := &stuckSink{entered: make(chan struct{})}
	path := filepath.Join(t.TempDir(), "events.jsonl")
	file, err := NewFileSink(path, 0, 1)
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	e, err := New(quiet(), Options{Queue: 8, Batch: 1, Registerer: reg}, stuck, file)
	if err != nil {
		t.Fatal(err)
	}

	evs := events(200)
	e.Publish(evs[0])
	<-stuck.entered
	start := time.Now()
	for _, ev := range evs[1:] {
		e.Publish(ev)
	}
	if el := time.Since(start); el > 2*time.Second {
		t.Fatalf("publishing took %v with a stuck sink", el)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if err := e.Close(ctx); err == nil || !strings.Contains(err.Error(), "deadline") {
		t.Fatalf("close err = %v, want the flush deadline", err)
	}
	// The stuck sink lost everything; the healthy file sink lost nothing
	// it had room for.
	dropped := e.Dropped()
	if dropped["stuck"] != 200 {
		t.Fatalf("stuck sink dropped %d, want 200", dropped["stuck"])
	}
	full := counterValue(t, reg, "stuck", DropQueueFull)
	if full < 150 {
		t.Fatalf("queue_full = %v, want most of 199", full)
	}
	if got := len(readSeqs(t, path)) + int(dropped[file.Name()]); got != 200 {
		t.Fatalf("file sink: written + dropped = %d, want 200", got)
	}
	e.Publish(evs[0])
	if e.Dropped()["stuck"] != 201 {
		t.Fatal("publish after close not counted")
	}
}

func TestNewRejectsDuplicateSinks(t *testing.T) {
	a := &stuckSink{entered: make(chan struct{})}
	if _, err := New(quiet(), Options{}, a, a); err == nil {
		t.Fatal("duplicate sink accepted")
	}
}

// counterValue reads vigil_export_dropped_total{sink, reason} from reg.
func counterValue(t *testing.T, reg *prometheus.Registry, sink, reason string) float64 {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, fam := range families {
		if fam.GetName() != "vigil_export_dropped_total" {
			continue
		}
		for _, m := range fam.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["sink"] == sink && labels["reason"] == reason {
				return m.GetCounter().GetValue()
			}
		}
	}
	return 0
}

func TestHTTPSinkNameHidesSecrets(t *testing.T) {
	s, err := NewHTTPSink("https://user:pw@127.0.0.1:8443/in?token=abc", HTTPOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if s.Name() != "webhook:https://127.0.0.1:8443/in" {
		t.Fatalf("name %q", s.Name())
	}
	if _, err := NewHTTPSink("https://user:pw@/x", HTTPOptions{}); err == nil || strings.Contains(err.Error(), "pw") {
		t.Fatalf("err = %v", err)
	}
}

func TestCloseTwice(t *testing.T) {
	e, err := New(quiet(), Options{}, &stuckSink{entered: make(chan struct{})})
	if err != nil {
		t.Fatal(err)
	}
	closeExporter(t, e)
	closeExporter(t, e)
}
