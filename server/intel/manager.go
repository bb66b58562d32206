package intel

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/vigilsec/vigil/policy"
)

// IndicatorSetter receives a feed's complete indicator set, replacing the
// previous set of that feed. The decision engine implements it; it must be
// safe for concurrent use and must not retain inds beyond its own copy.
type IndicatorSetter interface {
	SetIndicators(feed string, inds []policy.Indicator)
}

// loadTimeout bounds one load, so a hanging server cannot stall a feed.
const loadTimeout = time.Minute

// Options tune a Manager; the zero value is usable.
type Options struct {
	Client   *http.Client     // fetches URL feeds; nil means http.DefaultClient
	MaxBytes int64            // per load; 0 means DefaultMaxBytes
	Now      func() time.Time // clock for STIX validity; nil means time.Now
}

// FeedStatus is the outcome of a feed's loads so far.
type FeedStatus struct {
	Name       string
	Loaded     time.Time // time of the last successful load (zero: none yet)
	Indicators int       // indicators in force from this feed
	Skipped    int       // entries skipped by the last successful load
	Err        error     // the last load's error; nil after a success
}

// Manager runs feeds and hands their indicators to an IndicatorSetter. It is
// safe for concurrent use.
type Manager struct {
	sink  IndicatorSetter
	log   *slog.Logger
	opts  Options
	feeds []*feedState // read-only after NewManager

	mu     sync.Mutex
	status map[string]FeedStatus // guarded by mu
}

// feedState is one feed and what it last delivered.
type feedState struct {
	feed Feed

	load sync.Mutex         // serializes loads of this feed
	last []policy.Indicator // guarded by load: the set the sink holds
	sent bool               // guarded by load: the sink holds a set
}

// NewManager checks the feeds (valid and uniquely named) and returns a
// Manager that delivers to sink. Nothing is loaded until Run or Reload.
func NewManager(feeds []Feed, sink IndicatorSetter, log *slog.Logger, opts Options) (*Manager, error) {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	m := &Manager{sink: sink, log: log, opts: opts, status: make(map[string]FeedStatus)}
	for _, f := range feeds {
		if err := f.validate(); err != nil {
			return nil, err
		}
		if _, dup := m.status[f.Name]; dup {
			return nil, fmt.Errorf("feed %s: name used twice", f.Name)
		}
		if f.Interval == 0 {
			f.Interval = DefaultInterval
		}
		m.status[f.Name] = FeedStatus{Name: f.Name}
		m.feeds = append(m.feeds, &feedState{feed: f})
	}
	return m, nil
}

// Run loads every feed now and then on its interval, until ctx is done. It
// returns once every goroutine it started has returned. A failed load is
// logged and keeps the feed's previous set.
func (m *Manager) Run(ctx context.Context) {
	var wg sync.WaitGroup
	for _, fs := range m.feeds {
		wg.Go(func() { m.runFeed(ctx, fs) })
	}
	wg.Wait()
}

// runFeed is one feed's reload loop.
func (m *Manager) runFeed(ctx context.Context, fs *feedState) {
	tick := time.NewTicker(fs.feed.Interval)
	defer tick.Stop()
	for {
		if err := m.reload(ctx, fs); err != nil && ctx.Err() == nil {
			m.log.Warn("feed rejected, previous indicators kept", "feed", fs.feed.Name, "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// Reload loads the named feed now and delivers its set if it changed.
func (m *Manager) Reload(ctx context.Context, name string) error {
	for _, fs := range m.feeds {
		if fs.feed.Name == name {
			return m.reload(ctx, fs)
		}
	}
	return fmt.Errorf("feed %s: not configured", name)
}

// reload loads one feed, records the outcome and delivers a changed set.
func (m *Manager) reload(ctx context.Context, fs *feedState) error {
	fs.load.Lock()
	defer fs.load.Unlock()

	lctx, cancel := context.WithTimeout(ctx, loadTimeout)
	defer cancel()
	res, err := Load(lctx, fs.feed, m.opts.Client, m.opts.MaxBytes, m.opts.Now())
	if err != nil {
		m.setStatus(fs.feed.Name, func(st *FeedStatus) { st.Err = err })
		return err
	}
	changed := !fs.sent || !slices.Equal(fs.last, res.Indicators)
	if changed {
		m.sink.SetIndicators(fs.feed.Name, slices.Clone(res.Indicators))
		fs.last, fs.sent = res.Indicators, true
		m.log.Info("feed indicators updated", "feed", fs.feed.Name,
			"indicators", len(res.Indicators), "skipped", len(res.Skipped))
	}
	m.setStatus(fs.feed.Name, func(st *FeedStatus) {
		*st = FeedStatus{Name: st.Name, Loaded: m.opts.Now(),
			Indicators: len(res.Indicators), Skipped: len(res.Skipped)}
	})
	return nil
}

// setStatus updates a feed's status under mu.
func (m *Manager) setStatus(name string, update func(*FeedStatus)) {
	m.mu.Lock()
	defer m.mu.Unlock()
	st := m.status[name]
	update(&st)
	m.status[name] = st
}

// Status returns every feed's status, in configuration order.
func (m *Manager) Status() []FeedStatus {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]FeedStatus, 0, len(m.feeds))
	for _, fs := range m.feeds {
		out = append(out, m.status[fs.feed.Name])
	}
	return out
}
