// Package events fans stored events out to live followers (the admin
// FollowEvents stream) and to an exporter. The api package publishes every
// event after it is stored; nothing here blocks the publisher. It owns no
// resources beyond the subscribers' buffers.
package events

import (
	"errors"
	"sync"

	vigilpb "github.com/vigilsec/vigil/gen/vigil/v1"
)

// Publisher receives every stored event. Publish must never block: an
// exporter buffers on its own side.
type Publisher interface {
	Publish(ev *vigilpb.Event)
}

// ErrOverflow ends a subscription whose reader fell behind its buffer.
var ErrOverflow = errors.New("follower fell behind")

// Hub delivers published events to subscribers and to an optional Publisher.
// It is safe for concurrent use.
type Hub struct {
	out Publisher

	mu sync.Mutex
	// subs are the live subscriptions; guarded by mu.
	subs map[*Subscription]struct{}
}

// NewHub returns a hub that also hands every event to out (nil: none).
func NewHub(out Publisher) *Hub {
	return &Hub{out: out, subs: make(map[*Subscription]struct{})}
}

// Publish delivers ev to every matching subscriber without blocking. A
// subscriber whose buffer is full is ended with ErrOverflow rather than
// slowing the publisher; it may resubscribe and query what it missed.
func (h *Hub) Publish(ev *vigilpb.Event) {
	if h.out != nil {
		h.out.Publish(ev)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	for s := range h.subs {
		if !s.match(ev) {
			continue
		}
		select {
		case s.ch <- ev:
		default:
			s.end(ErrOverflow)
			delete(h.subs, s)
		}
	}
}

// Subscribe starts a subscription to the events match accepts, buffering up
// to buf of them. The caller must Close it.
func (h *Hub) Subscribe(match func(*vigilpb.Event) bool, buf int) *Subscription {
	s := &Subscription{hub: h, match: match, ch: make(chan *vigilpb.Event, buf), done: make(chan struct{})}
	h.mu.Lock()
	h.subs[s] = struct{}{}
	h.mu.Unlock()
	return s
}

// Subscription is one follower's view of the hub.
type Subscription struct {
	hub   *Hub
	match func(*vigilpb.Event) bool
	ch    chan *vigilpb.Event
	done  chan struct{}
	once  sync.Once
	// err is why the subscription ended; written once before done closes.
	err error
}

// C delivers the events, in publish order.
func (s *Subscription) C() <-chan *vigilpb.Event { return s.ch }

// Done is closed when the hub ended the subscription; Err says why.
func (s *Subscription) Done() <-chan struct{} { return s.done }

// Err returns why the subscription ended (nil while it runs or after Close).
func (s *Subscription) Err() error {
	select {
	case <-s.done:
		return s.err
	default:
		return nil
	}
}

// Close ends the subscription; it is safe to call more than once.
func (s *Subscription) Close() {
	s.hub.mu.Lock()
	delete(s.hub.subs, s)
	s.hub.mu.Unlock()
	s.end(nil)
}

func (s *Subscription) end(err error) {
	s.once.Do(func() {
		s.err = err
		close(s.done)
	})
}
