package dataplane

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"time"
	"unsafe"

	"github.com/cilium/ebpf/ringbuf"
)

// ErrClosed is returned by EventReader.Read after Close.
var ErrClosed = errors.New("event reader closed")

// EventReader reads decoded events from the ring buffer. Read and Close
// may be called from different goroutines; only one goroutine may Read.
type EventReader struct {
	rd  *ringbuf.Reader
	rec ringbuf.Record // reused by Read; only the reading goroutine touches it
}

// Events opens a reader on the ring buffer. The caller must Close it. Only
// one reader should consume a scope's events at a time.
func (d *Dataplane) Events() (*EventReader, error) {
	rd, err := ringbuf.NewReader(d.objs.Events)
	if err != nil {
		return nil, fmt.Errorf("open ring buffer: %w", err)
	}
	return &EventReader{rd: rd}, nil
}

// pollInterval bounds how long a submitted event waits for the reader: the
// kernel wakes the reader only once enough data is buffered.
const pollInterval = 20 * time.Millisecond

// Read blocks until the next event; ErrClosed after Close.
func (r *EventReader) Read() (Event, error) {
	for {
		r.rd.SetDeadline(time.Now().Add(pollInterval))
		err := r.rd.ReadInto(&r.rec)
		switch {
		case errors.Is(err, os.ErrDeadlineExceeded):
			continue
		case errors.Is(err, ringbuf.ErrClosed):
			return Event{}, ErrClosed
		case err != nil:
			return Event{}, fmt.Errorf("read ring buffer: %w", err)
		}
		return decodeEvent(r.rec.RawSample)
	}
}

// Close unblocks Read and releases the reader.
func (r *EventReader) Close() error { return r.rd.Close() }

func decodeEvent(raw []byte) (Event, error) {
	if want := int(unsafe.Sizeof(bpfVigilEvent{})); len(raw) < want {
		return Event{}, fmt.Errorf("decode event: %d bytes, want %d", len(raw), want)
	}
	e := (*bpfVigilEvent)(unsafe.Pointer(&raw[0]))
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
