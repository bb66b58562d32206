package dataplane

import (
	"errors"
	"fmt"
	"net/netip"
	"time"
	"unsafe"
)

// ErrClosed is returned by EventReader.Read after Close.
var ErrClosed = errors.New("event reader closed")

// EventReader reads decoded events from the ring buffer. Read and Close
// may be called from different goroutines; only one goroutine may Read.
//
// An event leaves the kernel's ring only when the next Read begins, so a
// reader that stores each event before reading the next loses none when it
// is killed: the next reader of the scope reads that event again.
//
// BUG: a reader killed after storing an event but before its next Read
// leaves that event in the ring, so the next reader stores it a second time.
type EventReader struct {
	ring *ring
	buf  []byte // reused by Read; only the reading goroutine touches it
}

// Events opens a reader on the ring buffer. The caller must Close it. Only
// one reader may consume a scope's events at a time.
func (d *Dataplane) Events() (*EventReader, error) {
	r, err := openRing(d.objs.Events)
	if err != nil {
		return nil, fmt.Errorf("open ring buffer: %w", err)
	}
	return &EventReader{ring: r}, nil
}

// pollInterval bounds how long a submitted event waits for the reader: the
// kernel wakes the reader only once enough data is buffered.
const pollInterval = 20 * time.Millisecond

// Read releases the event it returned before from the ring, then blocks
// until the next event; ErrClosed after Close. A record too short to
// decode is released and reported as an error.
func (r *EventReader) Read() (Event, error) {
	for {
		buf, err := r.ring.read(r.buf, pollInterval)
		r.buf = buf
		switch {
		case errors.Is(err, errNoRecord):
			continue
		case err != nil:
			return Event{}, err
		}
		return decodeEvent(buf)
	}
}

// Close unblocks Read and releases the reader. The event Read returned
// last stays in the ring for the next reader.
func (r *EventReader) Close() error { return r.ring.close() }

// shortEvent is the size of every record but exec's (SHORT_EVENT in
// bpf/events.h): the record without its filename.
const shortEvent = int(unsafe.Offsetof(bpfVigilEvent{}.Filename))

func decodeEvent(raw []byte) (Event, error) {
	if len(raw) < shortEvent {
		return Event{}, fmt.Errorf("decode event: %d bytes, want at least %d", len(raw), shortEvent)
	}
	var full bpfVigilEvent
	dst := unsafe.Slice((*byte)(unsafe.Pointer(&full)), unsafe.Sizeof(full))
	copy(dst, raw)
	e := &full
	return Event{
		Kind: EventKind(e.Kind), TimeNs: e.TimeNs, PID: e.Pid, TID: e.Tid, PPID: e.Ppid,
		StartTimeNs: e.StartNs, ParentStartNs: e.ParentStartNs, UID: e.Uid, GID: e.Gid,
		CgroupID: e.CgroupId, Exe: ExecIdentity{Dev: e.ExeDev, Ino: e.ExeIno},
		Filename: cString(e.Filename[:]), Comm: cString(e.Comm[:]),
		ExitCode: e.ExitCode, Signal: e.Signal, ChildPID: e.ChildPid, ChildStartNs: e.ChildStartNs,
		Proto: Protocol(e.Proto), Verdict: Verdict(e.Verdict), RuleID: e.RuleId, Inbound: e.Inbound != 0,
		Local:  addrPort(e.LocalAddr, e.LocalPort),
		Remote: addrPort(e.RemoteAddr, e.RemotePort),
	}, nil
}

// addrPort turns a kernel address into an AddrPort, IPv4-mapped IPv6 as
// IPv4; all zeroes (unknown) as the zero AddrPort.
func addrPort(a [16]byte, port uint16) netip.AddrPort {
	if a == [16]byte{} {
		return netip.AddrPort{}
	}
	return netip.AddrPortFrom(netip.AddrFrom16(a).Unmap(), port)
}
