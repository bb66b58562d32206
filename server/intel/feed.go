package intel

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Format is a feed's encoding.
type Format string

// Feed formats.
const (
	FormatCSV  Format = "csv"
	FormatSTIX Format = "stix"
)

// Defaults for a feed.
const (
	DefaultInterval = 5 * time.Minute
	// DefaultMaxBytes bounds what one load reads from a file or URL.
	DefaultMaxBytes = 64 << 20
)

// Feed describes one threat-intelligence feed.
type Feed struct {
	Name     string        // unique; becomes each indicator's Source
	Location string        // a file path, or an http:// or https:// URL
	Format   Format        // "" picks STIX for a .json name, else CSV
	Interval time.Duration // reload period; 0 means DefaultInterval
}

// IsURL reports whether the feed is fetched over HTTP.
func (f Feed) IsURL() bool {
	return strings.HasPrefix(f.Location, "http://") || strings.HasPrefix(f.Location, "https://")
}

// format returns the explicit or inferred format.
func (f Feed) format() Format {
	if f.Format != "" {
		return f.Format
	}
	name := f.Location
	if i := strings.IndexAny(name, "?#"); i >= 0 && f.IsURL() {
		name = name[:i]
	}
	if strings.EqualFold(filepath.Ext(name), ".json") {
		return FormatSTIX
	}
	return FormatCSV
}

// validate checks a feed's configuration.
func (f Feed) validate() error {
	switch {
	case f.Name == "":
		return fmt.Errorf("feed %q: empty name", f.Location)
	case f.Location == "":
		return fmt.Errorf("feed %s: empty location", f.Name)
	case f.Format != "" && f.Format != FormatCSV && f.Format != FormatSTIX:
		return fmt.Errorf("feed %s: format %q is not csv or stix", f.Name, f.Format)
	case f.Interval < 0:
		return fmt.Errorf("feed %s: negative interval %s", f.Name, f.Interval)
	}
	return nil
}

// Load reads and parses the feed once. client fetches URLs (nil:
// http.DefaultClient); at most maxBytes are read (0: DefaultMaxBytes). now
// decides which STIX indicators are expired.
func Load(ctx context.Context, f Feed, client *http.Client, maxBytes int64, now time.Time) (*Result, error) {
	if err := f.validate(); err != nil {
		return nil, err
	}
	data, err := fetch(ctx, f, client, maxBytes)
	if err != nil {
		return nil, err
	}
	data = bytes.TrimPrefix(data, []byte("\ufeff")) // a UTF-8 byte order mark
	if f.format() == FormatSTIX {
		return ParseSTIX(bytes.NewReader(data), f.Location, f.Name, now)
	}
	return ParseCSV(bytes.NewReader(data), f.Location, f.Name)
}

// fetch reads the feed's bytes from its file or URL.
func fetch(ctx context.Context, f Feed, client *http.Client, maxBytes int64) ([]byte, error) {
	if maxBytes <= 0 {
		maxBytes = DefaultMaxBytes
	}
	if !f.IsURL() {
		file, err := os.Open(f.Location)
		if err != nil {
			return nil, fmt.Errorf("read feed %s: %w", f.Name, err)
		}
		defer file.Close()
		return readLimited(file, f.Location, maxBytes)
	}

	body, err := get(ctx, f.Location, client)
	if err != nil {
		return nil, fmt.Errorf("fetch feed %s: %w", f.Name, err)
	}
	defer body.Close()
	return readLimited(body, f.Location, maxBytes)
}

// get issues the GET request and checks its status.
func get(ctx context.Context, url string, client *http.Client) (io.ReadCloser, error) {
	if client == nil {
		client = http.DefaultClient
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		return nil, fmt.Errorf("get %s: status %s", url, resp.Status)
	}
	return resp.Body, nil
}

// errTooLarge is returned for a feed larger than the read limit.
var errTooLarge = errors.New("feed larger than the read limit")

// readLimited reads r whole, refusing more than limit bytes.
func readLimited(r io.Reader, source string, limit int64) ([]byte, error) {
	data, err := io.ReadAll(io.LimitReader(r, limit+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", source, err)
	}
	if int64(len(data)) > limit {
		return nil, fmt.Errorf("read %s: %w (%d bytes)", source, errTooLarge, limit)
	}
	return data, nil
}
