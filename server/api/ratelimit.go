package api

import (
	"context"
	"sync"
	"time"
)

// bucket is a token bucket: rate tokens a second, up to burst. Its methods
// are safe for concurrent use.
type bucket struct {
	rate  float64
	burst float64

	mu sync.Mutex
	// tokens and last are guarded by mu.
	tokens float64
	last   time.Time
}

func newBucket(rate, burst float64) *bucket {
	return &bucket{rate: rate, burst: burst, tokens: burst, last: time.Now()}
}

// reserve takes a token and returns how long the caller must wait before
// using it (0 when one was available).
func (b *bucket) reserve(now time.Time) time.Duration {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.tokens = min(b.burst, b.tokens+now.Sub(b.last).Seconds()*b.rate)
	b.last = now
	b.tokens--
	if b.tokens >= 0 {
		return 0
	}
	return time.Duration(-b.tokens / b.rate * float64(time.Second))
}

// allow takes a token if one is available now.
func (b *bucket) allow(now time.Time) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.tokens = min(b.burst, b.tokens+now.Sub(b.last).Seconds()*b.rate)
	b.last = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// available returns the tokens in the bucket now.
func (b *bucket) available(now time.Time) float64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.tokens = min(b.burst, b.tokens+now.Sub(b.last).Seconds()*b.rate)
	b.last = now
	return b.tokens
}

// wait takes a token, sleeping until it is due or ctx ends.
func (b *bucket) wait(ctx context.Context) error {
	d := b.reserve(time.Now())
	if d == 0 {
		return nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// keyedLimiter keeps one bucket per key (a peer address), forgetting them
// all when it tracks too many, so it cannot grow without bound; an attacker
// spread over that many addresses at once therefore resets everyone's count.
type keyedLimiter struct {
	rate, burst float64
	max         int

	mu sync.Mutex
	// buckets is guarded by mu.
	buckets map[string]*bucket
}

func newKeyedLimiter(rate, burst float64, max int) *keyedLimiter {
	return &keyedLimiter{rate: rate, burst: burst, max: max, buckets: make(map[string]*bucket)}
}

// blocked reports whether key has no token left.
func (l *keyedLimiter) blocked(key string) bool {
	return l.get(key).available(time.Now()) < 1
}

// charge takes a token from key's bucket (it may go to zero, not below).
func (l *keyedLimiter) charge(key string) {
	l.get(key).allow(time.Now())
}

func (l *keyedLimiter) get(key string) *bucket {
	l.mu.Lock()
	defer l.mu.Unlock()
	b, ok := l.buckets[key]
	if !ok {
		if len(l.buckets) >= l.max {
			l.buckets = make(map[string]*bucket)
		}
		b = newBucket(l.rate, l.burst)
		l.buckets[key] = b
	}
	return b
}
