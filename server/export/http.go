package export

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/vigilsec/vigil/server/webhook"
)

// HTTP sink defaults.
const (
	DefaultAttempts   = 5
	DefaultBackoff    = 200 * time.Millisecond
	DefaultMaxBackoff = 5 * time.Second
)

// HTTPOptions tune an HTTPSink; zero values take the defaults.
type HTTPOptions struct {
	Client     *http.Client  // nil: a client with a 10 s timeout
	Secret     []byte        // when set, requests are signed like the webhook's
	Attempts   int           // per batch; DefaultAttempts
	Backoff    time.Duration // first retry delay, doubled each time; DefaultBackoff
	MaxBackoff time.Duration // DefaultMaxBackoff
}

// HTTPSink POSTs batches as a JSON array of records. A network error, 429 or
// 5xx is retried with exponential backoff; another status drops the batch.
// When a secret is set, each request carries X-Vigil-Timestamp and
// X-Vigil-Signature (HMAC-SHA256 over timestamp + "." + body). It is not
// safe for concurrent use; the Exporter calls it from one goroutine.
type HTTPSink struct {
	url  string
	name string // the URL without credentials or query, for metrics and logs
	opts HTTPOptions
}

// NewHTTPSink returns a sink posting to target, an http or https URL.
func NewHTTPSink(target string, opts HTTPOptions) (*HTTPSink, error) {
	req, err := http.NewRequest(http.MethodPost, target, nil)
	if err != nil || (req.URL.Scheme != "http" && req.URL.Scheme != "https") || req.URL.Host == "" {
		return nil, errors.New("export webhook: not an http(s) URL")
	}
	if opts.Client == nil {
		opts.Client = &http.Client{Timeout: 10 * time.Second}
	}
	if opts.Attempts <= 0 {
		opts.Attempts = DefaultAttempts
	}
	if opts.Backoff <= 0 {
		opts.Backoff = DefaultBackoff
	}
	if opts.MaxBackoff <= 0 {
		opts.MaxBackoff = DefaultMaxBackoff
	}
	name := req.URL.Scheme + "://" + req.URL.Host + req.URL.Path
	return &HTTPSink{url: target, name: name, opts: opts}, nil
}

// Name implements Sink. It omits the URL's credentials and query, which may
// hold tokens.
func (s *HTTPSink) Name() string { return "webhook:" + s.name }

// Write implements Sink: the batch is delivered whole or not at all.
func (s *HTTPSink) Write(ctx context.Context, items []Item) (int, error) {
	body := encodeBatch(items)
	delay := s.opts.Backoff
	var err error
	for attempt := 1; ; attempt++ {
		var retry bool
		retry, err = s.post(ctx, body)
		if err == nil {
			return 0, nil
		}
		if !retry || attempt == s.opts.Attempts {
			break
		}
		select {
		case <-ctx.Done():
			return len(items), fmt.Errorf("post %s: %w (after %v)", s.name, ctx.Err(), err)
		case <-time.After(delay):
		}
		delay = min(2*delay, s.opts.MaxBackoff)
	}
	return len(items), err
}

// post sends one request and says whether a failure is worth retrying.
func (s *HTTPSink) post(ctx context.Context, body []byte) (bool, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.url, bytes.NewReader(body))
	if err != nil {
		return false, fmt.Errorf("post %s: %w", s.name, err)
	}
	req.Header.Set("Content-Type", "application/json")
	if len(s.opts.Secret) > 0 {
		ts := time.Now().Unix()
		req.Header.Set(webhook.HeaderTimestamp, strconv.FormatInt(ts, 10))
		req.Header.Set(webhook.HeaderSignature, webhook.Sign(s.opts.Secret, ts, body))
	}

	resp, err := s.opts.Client.Do(req)
	if err != nil {
		return ctx.Err() == nil, fmt.Errorf("post %s: %w", s.name, redact(err))
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	switch {
	case resp.StatusCode >= 200 && resp.StatusCode < 300:
		return false, nil
	case resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode >= 500:
		return true, fmt.Errorf("post %s: status %s", s.name, resp.Status)
	}
	return false, fmt.Errorf("post %s: status %s", s.name, resp.Status)
}

// Close implements Sink.
func (s *HTTPSink) Close() error {
	s.opts.Client.CloseIdleConnections()
	return nil
}

// encodeBatch joins the items' JSON into an array.
func encodeBatch(items []Item) []byte {
	var b bytes.Buffer
	b.WriteByte('[')
	for i, it := range items {
		if i > 0 {
			b.WriteByte(',')
		}
		b.Write(it.JSON)
	}
	b.WriteByte(']')
	return b.Bytes()
}

// redact drops the URL from a client error, which repeats it in full.
func redact(err error) error {
	var uerr *url.Error
	if errors.As(err, &uerr) {
		return uerr.Err
	}
	return err
}
