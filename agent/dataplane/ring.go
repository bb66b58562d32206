package dataplane

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// Ring buffer record header bits and size (include/uapi/linux/bpf.h).
const (
	ringBusyBit    = 1 << 31
	ringDiscardBit = 1 << 30
	ringHeaderSize = 8
)

// errNoRecord means the ring holds no complete record right now.
var errNoRecord = errors.New("no record")

// ring reads the events ring buffer in place: it maps the consumer page
// and the data pages itself, so a record stays in the kernel's ring until
// the reader moves the consumer position past it. Nothing read is lost when
// the agent dies before storing it: the next reader finds it again.
type ring struct {
	fd   int
	cons []byte // the consumer page, mapped read-write
	prod []byte // the producer page and the data pages, mapped twice
	data []byte // prod without its first page
	mask uintptr

	mu     sync.Mutex
	closed bool    // set by close; guarded by mu
	next   uintptr // consumer position after the record last returned, 0 when none; guarded by mu
}

func openRing(m *ebpf.Map) (*ring, error) {
	page := os.Getpagesize()
	size := int(m.MaxEntries())
	cons, err := unix.Mmap(m.FD(), 0, page, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("map ring consumer page: %w", err)
	}
	prod, err := unix.Mmap(m.FD(), int64(page), page+2*size, unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		unix.Munmap(cons)
		return nil, fmt.Errorf("map ring data pages: %w", err)
	}
	return &ring{fd: m.FD(), cons: cons, prod: prod, data: prod[page:], mask: uintptr(size - 1)}, nil
}

func (r *ring) consPos() *uintptr { return (*uintptr)(unsafe.Pointer(&r.cons[0])) }
func (r *ring) prodPos() *uintptr { return (*uintptr)(unsafe.Pointer(&r.prod[0])) }

// read releases the record it returned before, then copies the next one
// into buf, waiting up to wait for one; errNoRecord when none came.
func (r *ring) read(buf []byte, wait time.Duration) ([]byte, error) {
	buf, err := r.take(buf)
	if !errors.Is(err, errNoRecord) {
		return buf, err
	}
	fds := []unix.PollFd{{Fd: int32(r.fd), Events: unix.POLLIN}}
	if _, err := unix.Poll(fds, int(wait.Milliseconds())); err != nil && !errors.Is(err, unix.EINTR) {
		return buf, fmt.Errorf("poll ring buffer: %w", err)
	}
	return r.take(buf)
}

// take releases the previous record and copies the next complete one.
func (r *ring) take(buf []byte) ([]byte, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return buf, ErrClosed
	}
	if r.next != 0 {
		atomic.StoreUintptr(r.consPos(), r.next)
		r.next = 0
	}

	cons := atomic.LoadUintptr(r.consPos())
	for {
		prod := atomic.LoadUintptr(r.prodPos())
		if prod-cons < ringHeaderSize {
			return buf, errNoRecord
		}
		hdr := atomic.LoadUint32((*uint32)(unsafe.Pointer(&r.data[cons&r.mask])))
		if hdr&ringBusyBit != 0 {
			return buf, errNoRecord
		}
		n := uintptr(hdr &^ (ringBusyBit | ringDiscardBit))
		start := cons + ringHeaderSize
		end := start + (n+7)&^7
		if hdr&ringDiscardBit != 0 {
			atomic.StoreUintptr(r.consPos(), end)
			cons = end
			continue
		}
		buf = append(buf[:0], r.data[start&r.mask:start&r.mask+n]...)
		r.next = end
		return buf, nil
	}
}

// close unmaps the ring; the record last returned stays unread, so the
// next reader gets it again. The map's descriptor stays open.
func (r *ring) close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return nil
	}
	r.closed = true
	return errors.Join(unix.Munmap(r.prod), unix.Munmap(r.cons))
}
