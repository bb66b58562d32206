package decide

import (
	"errors"
	"fmt"

	vigilpb "github.com/vigilsec/vigil/gen/vigil/v1"
)

// outbox collects a decision's Sink calls so they run after the decision,
// in the order the decision made them, without holding mu.
type outbox struct {
	ops []func() error
	err error // from settling expired findings when the decision began
	// full names an agent about to receive its full table: its diffs are
	// left out, since the table already holds them.
	full string
}

// lock takes mu, settles what expired since the last decision and returns
// the outbox of the decision that follows.
func (e *Engine) lock() *outbox {
	e.mu.Lock()
	o := &outbox{}
	o.err = e.settle(o)
	return o
}

// unlock hands over to emitMu, releases mu and runs the outbox.
func (e *Engine) unlock(o *outbox) error {
	e.emitMu.Lock()
	e.mu.Unlock()
	defer e.emitMu.Unlock()
	errs := []error{o.err}
	for _, op := range o.ops {
		if err := op(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (e *Engine) emitRecord(o *outbox, ev *vigilpb.Event) {
	if ev.TimeUnixNano == 0 {
		ev.TimeUnixNano = e.now().UnixNano()
	}
	o.ops = append(o.ops, func() error {
		e.sink.Record(ev)
		return nil
	})
}

func (e *Engine) emitDiff(o *outbox, agent string, d *vigilpb.TableDiff) {
	if agent == o.full {
		return
	}
	o.ops = append(o.ops, func() error {
		e.sink.PushDiff(agent, d)
		return nil
	})
}

// emitInstruction pushes an instruction, then records it with the sequence
// number the sink gave it.
func (e *Engine) emitInstruction(o *outbox, agent string, ins *vigilpb.Instruction) {
	ins.IssuedUnixNano = e.now().UnixNano()
	o.ops = append(o.ops, func() error {
		seq, err := e.sink.PushInstruction(agent, ins)
		if err != nil {
			return fmt.Errorf("push %s to %s: %w", ins.Kind, agent, err)
		}
		e.sink.Record(&vigilpb.Event{Kind: vigilpb.EventKind_EVENT_KIND_INSTRUCTION,
			TimeUnixNano: ins.IssuedUnixNano, Agent: agent, Entity: "device/" + agent,
			Message: fmt.Sprintf("instruction %d %s: %s", seq, describe(ins), ins.Reason)})
		return nil
	})
}

func describe(ins *vigilpb.Instruction) string {
	switch ins.Kind {
	case vigilpb.InstructionKind_INSTRUCTION_KIND_KILL:
		if ins.Tree {
			return fmt.Sprintf("kill tree %d@%d", ins.Pid, ins.StartTimeNs)
		}
		return fmt.Sprintf("kill pid %d@%d", ins.Pid, ins.StartTimeNs)
	case vigilpb.InstructionKind_INSTRUCTION_KIND_CUT:
		return "cut " + ins.Peer
	case vigilpb.InstructionKind_INSTRUCTION_KIND_RESTORE:
		return "restore " + ins.Peer
	case vigilpb.InstructionKind_INSTRUCTION_KIND_KILL_ON_EXEC:
		return "kill-on-exec " + ins.Sha256
	}
	return ins.Kind.String()
}
