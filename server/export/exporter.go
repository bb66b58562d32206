package export

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	vigilpb "github.com/vigilsec/vigil/gen/vigil/v1"
)

// Defaults for an Exporter.
const (
	DefaultQueue = 4096 // records buffered per sink
	DefaultBatch = 256  // records handed to a sink's Write at most
)

// Item is one record with its JSON encoding; sinks must not modify either.
type Item struct {
	Record *Record
	JSON   []byte
}

// Sink delivers records to one destination. The Exporter calls Write from a
// single goroutine per sink, and Close once, after the last Write.
type Sink interface {
	// Name identifies the sink in metrics and logs, e.g. "syslog:tcp://…".
	Name() string
	// Write delivers items in order and returns how many it could not
	// deliver, with an error explaining them (an error with 0 undelivered
	// reports a problem the sink recovered from). It gives up when ctx is
	// done.
	Write(ctx context.Context, items []Item) (int, error)
	// Close flushes and releases the sink's resources.
	Close() error
}

// Drop reasons, the "reason" label of the drop counter.
const (
	DropQueueFull   = "queue_full"
	DropWriteFailed = "write_failed"
	DropClosed      = "closed"
	DropEncode      = "encode_failed"
)

// Exporter fans events out to its sinks. Publish and Dropped are safe for
// concurrent use; Close is called once.
type Exporter struct {
	mapper Mapper
	log    *slog.Logger
	queues []*queue               // read-only after New
	in     chan *vigilpb.Event    // events waiting to be encoded
	drops  *prometheus.CounterVec // by sink and reason

	mu     sync.RWMutex
	closed bool // guarded by mu; in is closed when it is set

	cancel  context.CancelFunc // aborts sink writes when Close runs out of time
	encoded chan struct{}      // closed when the encoder has fanned out everything
	wg      sync.WaitGroup     // the queue goroutines
}

// queue is one sink with its buffer.
type queue struct {
	sink    Sink
	ch      chan Item
	dropped atomic.Uint64 // records lost for any reason
}

// Options tune an Exporter; zero values take the defaults.
type Options struct {
	Queue      int                   // per sink, and before encoding; DefaultQueue
	Batch      int                   // per Write; DefaultBatch
	Mapper     Mapper                // event → OCSF conversion
	Registerer prometheus.Registerer // for vigil_export_dropped_total; nil: none
}

// New starts an encoding goroutine and one goroutine per sink, and returns
// the Exporter that owns them and the sinks. Sink names must be unique. On
// error nothing is started and the sinks are left to the caller.
func New(log *slog.Logger, opts Options, sinks ...Sink) (*Exporter, error) {
	if opts.Queue <= 0 {
		opts.Queue = DefaultQueue
	}
	if opts.Batch <= 0 {
		opts.Batch = DefaultBatch
	}
	e := &Exporter{mapper: opts.Mapper, log: log, in: make(chan *vigilpb.Event, opts.Queue)}
	seen := make(map[string]bool)
	for _, s := range sinks {
		if seen[s.Name()] {
			return nil, fmt.Errorf("export sink %s: configured twice", s.Name())
		}
		seen[s.Name()] = true
		e.queues = append(e.queues, &queue{sink: s, ch: make(chan Item, opts.Queue)})
	}
	if err := e.registerMetrics(opts.Registerer); err != nil {
		return nil, err
	}

	ctx, cancel := context.WithCancel(context.Background())
	e.cancel, e.encoded = cancel, make(chan struct{})
	go e.encode()
	for _, q := range e.queues {
		e.wg.Go(func() { e.run(ctx, q, opts.Batch) })
	}
	return e, nil
}

// registerMetrics creates the drop counter and registers it on reg.
func (e *Exporter) registerMetrics(reg prometheus.Registerer) error {
	e.drops = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "vigil_export_dropped_total",
		Help: "Exported records lost, by sink and reason (queue_full, write_failed, closed, encode_failed).",
	}, []string{"sink", "reason"})
	if reg == nil {
		return nil
	}
	if err := reg.Register(e.drops); err != nil {
		return fmt.Errorf("register export metrics: %w", err)
	}
	return nil
}

// Publish queues ev for export without blocking: when the queue is full the
// event is lost for every sink, which is counted. The caller must not modify
// ev afterwards; the Exporter only reads it.
func (e *Exporter) Publish(ev *vigilpb.Event) {
	if len(e.queues) == 0 {
		return
	}
	e.mu.RLock()
	defer e.mu.RUnlock()
	if e.closed {
		e.dropAll(DropClosed)
		return
	}
	select {
	case e.in <- ev:
	default:
		e.dropAll(DropQueueFull)
	}
}

// encode converts queued events and hands them to every sink's queue; a
// full sink queue loses the record for that sink only.
func (e *Exporter) encode() {
	defer close(e.encoded)
	for ev := range e.in {
		rec := e.mapper.Map(ev)
		data, err := json.Marshal(rec)
		if err != nil {
			e.dropAll(DropEncode)
			continue
		}
		it := Item{Record: rec, JSON: data}
		for _, q := range e.queues {
			select {
			case q.ch <- it:
			default:
				e.drop(q, DropQueueFull, 1)
			}
		}
	}
	for _, q := range e.queues {
		close(q.ch)
	}
}

// dropAll counts one lost record for every sink.
func (e *Exporter) dropAll(reason string) {
	for _, q := range e.queues {
		e.drop(q, reason, 1)
	}
}

// drop counts n lost records.
func (e *Exporter) drop(q *queue, reason string, n int) {
	q.dropped.Add(uint64(n))
	e.drops.WithLabelValues(q.sink.Name(), reason).Add(float64(n))
}

// Dropped returns the records each sink has lost so far, by sink name.
func (e *Exporter) Dropped() map[string]uint64 {
	out := make(map[string]uint64, len(e.queues))
	for _, q := range e.queues {
		out[q.sink.Name()] = q.dropped.Load()
	}
	return out
}

// run drains one sink's queue in batches until the queue is closed.
func (e *Exporter) run(ctx context.Context, q *queue, max int) {
	batch := make([]Item, 0, max)
	for it := range q.ch {
		batch = append(batch[:0], it)
	fill:
		for len(batch) < max {
			select {
			case more, ok := <-q.ch:
				if !ok {
					break fill
				}
				batch = append(batch, more)
			default:
				break fill
			}
		}
		e.write(ctx, q, batch)
	}
}

// write hands a batch to the sink and counts what it could not deliver.
func (e *Exporter) write(ctx context.Context, q *queue, batch []Item) {
	if ctx.Err() != nil {
		e.drop(q, DropClosed, len(batch))
		return
	}
	failed, err := q.sink.Write(ctx, batch)
	if failed > 0 {
		e.drop(q, DropWriteFailed, failed)
		e.log.Warn("export records dropped", "sink", q.sink.Name(), "dropped", failed, "err", err)
	}
}

// Close stops accepting records, lets every sink deliver what it has queued
// until ctx is done, then abandons the rest (counted as dropped) and closes
// the sinks. It returns ctx's error if the deadline cut the flush short, and
// any sink's close error. Calls after the first return nil.
func (e *Exporter) Close(ctx context.Context) error {
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return nil
	}
	e.closed = true
	close(e.in)
	e.mu.Unlock()

	done := make(chan struct{})
	go func() { <-e.encoded; e.wg.Wait(); close(done) }()
	var errs []error
	select {
	case <-done:
	case <-ctx.Done():
		e.cancel()
		<-done
		errs = append(errs, fmt.Errorf("flush exports: %w", ctx.Err()))
	}
	e.cancel()

	for _, q := range e.queues {
		if err := q.sink.Close(); err != nil {
			errs = append(errs, fmt.Errorf("close sink %s: %w", q.sink.Name(), err))
		}
	}
	return errors.Join(errs...)
}
