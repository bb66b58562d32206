package api

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	vigilpb "github.com/vigilsec/vigil/gen/vigil/v1"
	"github.com/vigilsec/vigil/server/events"
	"github.com/vigilsec/vigil/server/metrics"
	"github.com/vigilsec/vigil/server/registry"
	"github.com/vigilsec/vigil/server/store"
)

// ErrUnknownAgent is returned when an instruction names no enrolled agent.
var ErrUnknownAgent = errors.New("unknown agent")

// Dispatcher is the Sink the engine pushes through, and the path every
// instruction, diff and server event takes: it stores, then delivers to the
// agent's stream when the agent is online, and publishes events. It is safe
// for concurrent use.
type Dispatcher struct {
	st      *store.Store
	reg     *registry.Registry
	hub     *events.Hub
	metrics *metrics.Metrics
	log     *slog.Logger

	// insMu serializes storing an instruction with queueing it, so sequence
	// numbers reach each stream in order; it also guards sessions' insReady
	// and lastIns.
	insMu sync.Mutex

	waitMu sync.Mutex
	// waiters are callers blocked on an instruction's ack; guarded by waitMu.
	waiters map[waitKey][]chan *vigilpb.InstructionAck
}

type waitKey struct {
	agent string
	seq   uint64
}

// DispatcherConfig is what a Dispatcher is built from.
type DispatcherConfig struct {
	// Store and Registry are required.
	Store    *store.Store
	Registry *registry.Registry
	// Publisher, when set, receives every stored event (agent and server
	// events alike); it must never block.
	Publisher events.Publisher
	// Metrics may be nil.
	Metrics *metrics.Metrics
	// Logger is required.
	Logger *slog.Logger
}

// NewDispatcher returns a dispatcher; it owns the hub that fans stored
// events out to followers and to cfg.Publisher.
func NewDispatcher(cfg DispatcherConfig) *Dispatcher {
	return &Dispatcher{st: cfg.Store, reg: cfg.Registry, hub: events.NewHub(cfg.Publisher),
		metrics: cfg.Metrics, log: cfg.Logger, waiters: make(map[waitKey][]chan *vigilpb.InstructionAck)}
}

func (d *Dispatcher) session(agent string) *session {
	s, _ := d.reg.Conn(agent).(*session)
	return s
}

// PushDiff implements Sink: the diff goes to the agent's stream, or nowhere
// when the agent is offline (it gets a full table at its next hello).
func (d *Dispatcher) PushDiff(agent string, diff *vigilpb.TableDiff) {
	if s := d.session(agent); s != nil {
		s.pushDiff(diff)
		d.metrics.TablePushed("diff")
	}
}

// PushInstruction implements Sink: it stores the instruction durably with
// the agent's next sequence number, then queues it on the agent's stream;
// an offline agent gets it, in order, when it reconnects.
func (d *Dispatcher) PushInstruction(agent string, ins *vigilpb.Instruction) (uint64, error) {
	if !d.reg.Known(agent) {
		return 0, fmt.Errorf("push instruction to %s: %w", agent, ErrUnknownAgent)
	}
	if ins.IssuedUnixNano == 0 {
		ins.IssuedUnixNano = time.Now().UnixNano()
	}

	d.insMu.Lock()
	seq, err := d.st.AddInstruction(agent, ins)
	if err == nil {
		if s := d.session(agent); s != nil && s.insReady && seq > s.lastIns {
			s.send(instructionMsg(ins))
			s.lastIns = seq
		}
	}
	d.insMu.Unlock()
	if err != nil {
		return 0, err
	}

	d.metrics.InstructionIssued(ins.GetKind())
	d.Record(instructionEvent(agent, ins, nil))
	return seq, nil
}

// deliverPending queues the agent's unacknowledged instructions, in order,
// then lets new ones flow directly.
func (d *Dispatcher) deliverPending(s *session) error {
	d.insMu.Lock()
	defer d.insMu.Unlock()
	pending, err := d.st.PendingInstructions(s.agent)
	if err != nil {
		return err
	}
	for _, ins := range pending {
		if ins.GetSeq() > s.lastIns {
			s.send(instructionMsg(ins))
			s.lastIns = ins.GetSeq()
		}
	}
	s.insReady = true
	return nil
}

// Record implements Sink: it stores a server event and publishes it. A store
// failure is logged, since the engine has no way to act on it.
func (d *Dispatcher) Record(ev *vigilpb.Event) {
	if err := d.st.RecordEvent(ev); err != nil {
		d.log.Error("record server event", "err", err)
		return
	}
	d.metrics.EventStored(ev.GetKind())
	d.hub.Publish(ev)
}

// acked stores an agent's acknowledgement and wakes the callers waiting on
// it. Repeated acknowledgements are ignored.
func (d *Dispatcher) acked(agent string, ack *vigilpb.InstructionAck) error {
	rec, first, err := d.st.AckInstruction(agent, ack)
	if err != nil || !first {
		return err
	}
	issued := time.Unix(0, rec.Instruction.GetIssuedUnixNano())
	d.metrics.InstructionAcked(time.Since(issued))

	d.waitMu.Lock()
	chans := d.waiters[waitKey{agent, ack.GetSeq()}]
	delete(d.waiters, waitKey{agent, ack.GetSeq()})
	d.waitMu.Unlock()
	for _, ch := range chans {
		ch <- ack
	}
	d.Record(instructionEvent(agent, rec.Instruction, ack))
	return nil
}

// waitAck blocks until the instruction is acknowledged or ctx ends; it
// returns nil on timeout.
func (d *Dispatcher) waitAck(ctx context.Context, agent string, seq uint64) (*vigilpb.InstructionAck, error) {
	key := waitKey{agent, seq}
	ch := make(chan *vigilpb.InstructionAck, 1)
	d.waitMu.Lock()
	d.waiters[key] = append(d.waiters[key], ch)
	d.waitMu.Unlock()
	defer d.unwait(key, ch)

	// The ack may have been stored before the waiter was registered.
	rec, err := d.st.Instruction(agent, seq)
	if err != nil || rec.Ack != nil {
		return rec.Ack, err
	}
	select {
	case ack := <-ch:
		return ack, nil
	case <-ctx.Done():
		return nil, nil
	}
}

func (d *Dispatcher) unwait(key waitKey, ch chan *vigilpb.InstructionAck) {
	d.waitMu.Lock()
	defer d.waitMu.Unlock()
	list := d.waiters[key]
	for i, c := range list {
		if c == ch {
			list = append(list[:i], list[i+1:]...)
			break
		}
	}
	if len(list) == 0 {
		delete(d.waiters, key)
		return
	}
	d.waiters[key] = list
}

func instructionMsg(ins *vigilpb.Instruction) *vigilpb.ServerMessage {
	return &vigilpb.ServerMessage{Body: &vigilpb.ServerMessage_Instruction{Instruction: ins}}
}

func instructionEvent(agent string, ins *vigilpb.Instruction, ack *vigilpb.InstructionAck) *vigilpb.Event {
	kind := enumWord(ins.GetKind().String(), "INSTRUCTION_KIND_")
	msg := fmt.Sprintf("instruction %d %s issued", ins.GetSeq(), kind)
	if ack != nil {
		msg = fmt.Sprintf("instruction %d %s: %s", ins.GetSeq(), kind,
			enumWord(ack.GetOutcome().String(), "INSTRUCTION_OUTCOME_"))
		if ack.GetError() != "" {
			msg += ": " + ack.GetError()
		}
	}
	return &vigilpb.Event{
		Kind:         vigilpb.EventKind_EVENT_KIND_INSTRUCTION,
		TimeUnixNano: time.Now().UnixNano(),
		Agent:        agent,
		Entity:       "device/" + agent,
		Message:      msg,
	}
}

// enumWord turns a protobuf enum name such as INSTRUCTION_KIND_KILL_ON_EXEC
// into the word an operator reads, "kill-on-exec".
func enumWord(name, prefix string) string {
	return strings.ReplaceAll(strings.ToLower(strings.TrimPrefix(name, prefix)), "_", "-")
}
