package api

import (
	"errors"
	"sync"

	vigilpb "github.com/vigilsec/vigil/gen/vigil/v1"
)

// errQueueFull ends a stream whose agent does not read fast enough. The agent
// reconnects and receives a full table, so no decision is lost; dropping the
// stream is what keeps one slow agent from holding up the others.
var errQueueFull = errors.New("send queue full")

// session is one agent's open stream as the rest of the server sees it: a
// bounded queue of messages for the stream's send loop, and the ordering
// rules for tables, diffs and instructions. Its methods are safe for
// concurrent use and never block.
type session struct {
	agent  string
	serial string
	queue  chan *vigilpb.ServerMessage
	done   chan struct{}
	once   sync.Once
	// err is why the session ended; written once, before done closes.
	err error

	mu sync.Mutex
	// tableSent is false while a full table is being computed; diffs pushed
	// meanwhile are held. Guarded by mu, as are tableVersion, firstVersion
	// and held.
	tableSent    bool
	tableVersion uint64 // the newest table version sent
	firstVersion uint64 // the first table version sent, 0 before any
	held         []*vigilpb.TableDiff

	// insReady says pending instructions were delivered, so new ones may go
	// out directly; lastIns is the highest sequence queued. Both are guarded
	// by the dispatcher's insMu.
	insReady bool
	lastIns  uint64
}

func newSession(agent, serial string, queueLen int) *session {
	return &session{
		agent:  agent,
		serial: serial,
		queue:  make(chan *vigilpb.ServerMessage, queueLen),
		done:   make(chan struct{}),
	}
}

// Close ends the session with err as the reason; later calls do nothing.
func (s *session) Close(err error) {
	s.once.Do(func() {
		s.err = err
		close(s.done)
	})
}

// send queues msg, or ends the session when the queue is full.
func (s *session) send(msg *vigilpb.ServerMessage) {
	select {
	case s.queue <- msg:
	default:
		s.Close(errQueueFull)
	}
}

// holdDiffs starts holding diffs until the next full table goes out.
func (s *session) holdDiffs() {
	s.mu.Lock()
	s.tableSent = false
	s.mu.Unlock()
}

// sendTable queues a full table, then the held diffs that come after it.
func (s *session) sendTable(t *vigilpb.VerdictTable) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.send(&vigilpb.ServerMessage{Body: &vigilpb.ServerMessage_Table{Table: t}})
	s.tableSent, s.tableVersion = true, t.GetVersion()
	if s.firstVersion == 0 {
		s.firstVersion = t.GetVersion()
	}
	for _, d := range s.held {
		if d.GetVersion() > s.tableVersion {
			s.sendDiffLocked(d)
		}
	}
	s.held = nil
}

// pushDiff queues a diff unless the table already sent includes it.
func (s *session) pushDiff(d *vigilpb.TableDiff) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.tableSent {
		if len(s.held) == cap(s.queue) {
			s.Close(errQueueFull)
			return
		}
		s.held = append(s.held, d)
		return
	}
	if d.GetVersion() > s.tableVersion {
		s.sendDiffLocked(d)
	}
}

func (s *session) sendDiffLocked(d *vigilpb.TableDiff) {
	s.send(&vigilpb.ServerMessage{Body: &vigilpb.ServerMessage_Diff{Diff: d}})
	s.tableVersion = d.GetVersion()
}

// sentVersion reports whether table version v went out on this stream:
// every version from the first table sent to the newest did, since a table
// changes one version at a time and each change goes out as a diff.
func (s *session) sentVersion(v uint64) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.firstVersion != 0 && s.firstVersion <= v && v <= s.tableVersion
}
