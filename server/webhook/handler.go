package webhook

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	vigilpb "github.com/vigilsec/vigil/gen/vigil/v1"
)

// Request headers.
const (
	HeaderTimestamp = "X-Vigil-Timestamp"
	HeaderSignature = "X-Vigil-Signature"
)

// Defaults for Options.
const (
	DefaultWindow  = 5 * time.Minute
	DefaultMaxBody = 1 << 20
	// DefaultMaxResults bounds the results in one request.
	DefaultMaxResults = 1000
	// maxSeen bounds the replay cache; when it is full of live entries new
	// requests are refused with 503 until entries age out.
	maxSeen = 100_000
)

// Reporter records a result as a finding. The decision engine implements it.
type Reporter interface {
	Report(ctx context.Context, req *vigilpb.ReportRequest) (*vigilpb.ReportResponse, error)
}

// Options tune a Handler; zero values take the defaults.
type Options struct {
	Window     time.Duration    // accepted clock skew either way; DefaultWindow
	MaxBody    int64            // bytes; DefaultMaxBody
	MaxResults int              // per request; DefaultMaxResults
	Now        func() time.Time // clock; time.Now
	// Registerer, when set, receives vigil_webhook_requests_total and
	// vigil_webhook_results_total.
	Registerer prometheus.Registerer
}

// Handler is the http.Handler for external results. It is safe for
// concurrent use.
type Handler struct {
	secret   []byte // read-only
	reporter Reporter
	log      *slog.Logger
	opts     Options
	requests *prometheus.CounterVec // by HTTP status code
	results  prometheus.Counter     // results recorded

	mu        sync.Mutex
	seen      map[string]time.Time // guarded by mu: signature → when it leaves the window
	nextPrune time.Time            // guarded by mu: when seen is next swept
}

// NewHandler returns a Handler that verifies requests with secret (at least
// 16 bytes) and passes results to reporter.
func NewHandler(secret []byte, reporter Reporter, log *slog.Logger, opts Options) (*Handler, error) {
	if len(secret) < 16 {
		return nil, fmt.Errorf("webhook secret: %d bytes, want at least 16", len(secret))
	}
	if opts.Window <= 0 {
		opts.Window = DefaultWindow
	}
	if opts.MaxBody <= 0 {
		opts.MaxBody = DefaultMaxBody
	}
	if opts.MaxResults <= 0 {
		opts.MaxResults = DefaultMaxResults
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	h := &Handler{secret: secret, reporter: reporter, log: log, opts: opts}
	h.seen = make(map[string]time.Time)
	if err := h.registerMetrics(opts.Registerer); err != nil {
		return nil, err
	}
	return h, nil
}

// registerMetrics creates the request and result counters and registers them
// on reg when it is set.
func (h *Handler) registerMetrics(reg prometheus.Registerer) error {
	h.requests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "vigil_webhook_requests_total",
		Help: "External-result requests answered, by HTTP status code.",
	}, []string{"code"})
	h.results = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "vigil_webhook_results_total",
		Help: "External results recorded as findings.",
	})
	if reg == nil {
		return nil
	}
	for _, c := range []prometheus.Collector{h.requests, h.results} {
		if err := reg.Register(c); err != nil {
			return fmt.Errorf("register webhook metrics: %w", err)
		}
	}
	return nil
}

// Sign returns the X-Vigil-Signature value for a body sent at ts. Senders
// (and tests) use it.
func Sign(secret []byte, ts int64, body []byte) string {
	mac := hmac.New(sha256.New, secret)
	mac.Write([]byte(strconv.FormatInt(ts, 10)))
	mac.Write([]byte("."))
	mac.Write(body)
	return "sha256=" + hex.EncodeToString(mac.Sum(nil))
}

// ServeHTTP authenticates the request, decodes its results and reports each.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	sw := &statusWriter{ResponseWriter: w, code: http.StatusOK}
	h.serve(sw, r)
	h.requests.WithLabelValues(strconv.Itoa(sw.code)).Inc()
}

// statusWriter remembers the status code a handler sent.
type statusWriter struct {
	http.ResponseWriter
	code int
}

func (w *statusWriter) WriteHeader(code int) {
	w.code = code
	w.ResponseWriter.WriteHeader(code)
}

// serve is ServeHTTP without the request count.
func (h *Handler) serve(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		writeError(w, http.StatusMethodNotAllowed, "method %s not allowed, use POST", r.Method)
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, h.opts.MaxBody))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			writeError(w, http.StatusRequestEntityTooLarge, "body over %d bytes", h.opts.MaxBody)
			return
		}
		writeError(w, http.StatusBadRequest, "read body: %v", err)
		return
	}
	if code, msg := h.authenticate(r.Header, body); code != 0 {
		writeError(w, code, "%s", msg)
		return
	}
	h.serveResults(r.Context(), w, body)
}

// serveResults decodes, validates and reports the results in body.
func (h *Handler) serveResults(ctx context.Context, w http.ResponseWriter, body []byte) {
	results, err := DecodeResults(body, h.opts.MaxResults)
	if err != nil {
		writeError(w, http.StatusBadRequest, "%v", err)
		return
	}
	levels := make([]resultLevel, 0, len(results))
	for i, res := range results {
		resp, err := h.reporter.Report(ctx, res.request())
		if err != nil {
			h.writeReportError(w, i, res.Entity, err)
			return
		}
		h.results.Inc()
		levels = append(levels, resultLevel{Entity: res.Entity, Level: resp.GetLevel()})
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(map[string]any{"accepted": len(levels), "results": levels})
}

// resultLevel is one entity's level after its result was reported.
type resultLevel struct {
	Entity string `json:"entity"`
	Level  string `json:"level"`
}

// writeReportError maps an engine error onto an HTTP status without leaking
// its internal text for server-side failures. Results before index i have
// been recorded.
func (h *Handler) writeReportError(w http.ResponseWriter, i int, entity string, err error) {
	st, _ := status.FromError(err)
	switch st.Code() {
	case codes.InvalidArgument, codes.FailedPrecondition:
		writeError(w, http.StatusUnprocessableEntity, "results[%d]: %s", i, st.Message())
	case codes.NotFound:
		writeError(w, http.StatusNotFound, "results[%d]: entity %s not found", i, entity)
	case codes.Unavailable, codes.ResourceExhausted:
		writeError(w, http.StatusServiceUnavailable, "results[%d]: engine busy, retry; %d before it were recorded", i, i)
	default:
		h.log.Error("report external result", "entity", entity, "err", err)
		writeError(w, http.StatusInternalServerError, "results[%d]: not recorded; %d before it were", i, i)
	}
}

// writeError sends a JSON error body.
func writeError(w http.ResponseWriter, code int, format string, args ...any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(map[string]string{"error": fmt.Sprintf(format, args...)})
}

// authenticate checks the timestamp window, the signature and replays. It
// returns 0 for an authentic request, else the status and message to send.
func (h *Handler) authenticate(hdr http.Header, body []byte) (int, string) {
	tsText, sig := hdr.Get(HeaderTimestamp), hdr.Get(HeaderSignature)
	if tsText == "" || sig == "" {
		return http.StatusUnauthorized, "missing " + HeaderTimestamp + " or " + HeaderSignature + " header"
	}
	ts, err := strconv.ParseInt(tsText, 10, 64)
	if err != nil {
		return http.StatusUnauthorized, HeaderTimestamp + ": not unix seconds"
	}
	now := h.opts.Now()
	sent := time.Unix(ts, 0)
	if sent.Before(now.Add(-h.opts.Window)) || sent.After(now.Add(h.opts.Window)) {
		return http.StatusUnauthorized, HeaderTimestamp + ": outside the accepted window"
	}

	want := Sign(h.secret, ts, body)
	if !strings.HasPrefix(sig, "sha256=") || !hmac.Equal([]byte(sig), []byte(want)) {
		return http.StatusUnauthorized, HeaderSignature + ": does not match"
	}
	return h.checkReplay(want, sent.Add(h.opts.Window), now)
}

// checkReplay records an authentic signature until it leaves the window and
// refuses one seen before.
func (h *Handler) checkReplay(sig string, expires, now time.Time) (int, string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if _, dup := h.seen[sig]; dup {
		return http.StatusConflict, "request already received (replay)"
	}
	if len(h.seen) >= maxSeen || now.After(h.nextPrune) {
		for s, exp := range h.seen {
			if exp.Before(now) {
				delete(h.seen, s)
			}
		}
		h.nextPrune = now.Add(h.opts.Window)
	}
	if len(h.seen) >= maxSeen {
		return http.StatusServiceUnavailable, "too many requests in the replay window"
	}
	h.seen[sig] = expires
	return 0, ""
}
