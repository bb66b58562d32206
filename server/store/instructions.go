package store

import (
	"encoding/binary"
	"errors"
	"fmt"

	badger "github.com/dgraph-io/badger/v4"
	"google.golang.org/protobuf/proto"

	vigilpb "github.com/vigilsec/vigil/gen/vigil/v1"
)

// InstructionRecord is a stored instruction and, once the agent answered,
// its acknowledgement.
type InstructionRecord struct {
	// Instruction is the instruction as sent.
	Instruction *vigilpb.Instruction
	// Ack is the agent's acknowledgement; nil while pending.
	Ack *vigilpb.InstructionAck
}

// AddInstruction assigns the agent's next instruction sequence number
// (starting at 1) to ins, sets it in ins.Seq and stores the instruction as
// pending. The write is durable when it returns.
func (s *Store) AddInstruction(agent string, ins *vigilpb.Instruction) (uint64, error) {
	s.insMu.Lock()
	defer s.insMu.Unlock()
	err := s.db.Update(func(txn *badger.Txn) error {
		seq, err := getUint(txn, []byte(pfxInsSeq+agent))
		if err != nil {
			return err
		}
		ins.Seq = seq + 1
		if err := putUint(txn, []byte(pfxInsSeq+agent), ins.Seq); err != nil {
			return err
		}
		return putInstruction(txn, agent, InstructionRecord{Instruction: ins})
	})
	if err != nil {
		return 0, fmt.Errorf("add instruction for %s: %w", agent, err)
	}
	return ins.Seq, nil
}

// AckInstruction stores the acknowledgement of instruction ack.Seq. It
// returns the record and whether this acknowledgement was the first; a
// repeated acknowledgement changes nothing. An unknown sequence number
// returns ErrNotFound.
func (s *Store) AckInstruction(agent string, ack *vigilpb.InstructionAck) (InstructionRecord, bool, error) {
	s.insMu.Lock()
	defer s.insMu.Unlock()
	var rec InstructionRecord
	var first bool
	err := s.db.Update(func(txn *badger.Txn) error {
		var err error
		if rec, err = getInstruction(txn, agent, ack.GetSeq()); err != nil || rec.Ack != nil {
			return err
		}
		rec.Ack, first = ack, true
		return putInstruction(txn, agent, rec)
	})
	if err != nil {
		return InstructionRecord{}, false, fmt.Errorf("ack instruction %d of %s: %w", ack.GetSeq(), agent, err)
	}
	return rec, first, nil
}

// Instruction returns one stored instruction.
func (s *Store) Instruction(agent string, seq uint64) (InstructionRecord, error) {
	var rec InstructionRecord
	err := s.db.View(func(txn *badger.Txn) error {
		var err error
		rec, err = getInstruction(txn, agent, seq)
		return err
	})
	return rec, err
}

// PendingInstructions returns the agent's unacknowledged instructions in
// sequence order.
func (s *Store) PendingInstructions(agent string) ([]*vigilpb.Instruction, error) {
	var out []*vigilpb.Instruction
	err := s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte(pfxInstruction + agent + "\x00")})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			var rec InstructionRecord
			err := it.Item().Value(func(b []byte) (err error) { rec, err = decodeInstruction(b); return err })
			if err != nil {
				return err
			}
			if rec.Ack == nil {
				out = append(out, rec.Instruction)
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list pending instructions of %s: %w", agent, err)
	}
	return out, nil
}

// CancelPending acknowledges every pending instruction of the agent as
// failed with reason, so none is delivered to a new agent that enrolled
// under the same name. It returns how many it cancelled.
func (s *Store) CancelPending(agent, reason string) (int, error) {
	pending, err := s.PendingInstructions(agent)
	if err != nil {
		return 0, err
	}
	for _, ins := range pending {
		ack := &vigilpb.InstructionAck{Seq: ins.GetSeq(),
			Outcome: vigilpb.InstructionOutcome_INSTRUCTION_OUTCOME_FAILED, Error: reason}
		if _, _, err := s.AckInstruction(agent, ack); err != nil {
			return 0, err
		}
	}
	return len(pending), nil
}

func getInstruction(txn *badger.Txn, agent string, seq uint64) (InstructionRecord, error) {
	item, err := txn.Get(agentKey(pfxInstruction, agent, seq))
	if errors.Is(err, badger.ErrKeyNotFound) {
		return InstructionRecord{}, ErrNotFound
	}
	if err != nil {
		return InstructionRecord{}, err
	}
	var rec InstructionRecord
	err = item.Value(func(b []byte) (err error) { rec, err = decodeInstruction(b); return err })
	return rec, err
}

// Instruction records are [acked byte][uint32 length][instruction][ack].
func putInstruction(txn *badger.Txn, agent string, rec InstructionRecord) error {
	ins, err := proto.Marshal(rec.Instruction)
	if err != nil {
		return fmt.Errorf("marshal instruction: %w", err)
	}
	val := []byte{0}
	if rec.Ack != nil {
		val[0] = 1
	}
	val = binary.BigEndian.AppendUint32(val, uint32(len(ins)))
	val = append(val, ins...)
	if rec.Ack != nil {
		val, err = proto.MarshalOptions{}.MarshalAppend(val, rec.Ack)
		if err != nil {
			return fmt.Errorf("marshal instruction ack: %w", err)
		}
	}
	return txn.Set(agentKey(pfxInstruction, agent, rec.Instruction.GetSeq()), val)
}

func decodeInstruction(b []byte) (InstructionRecord, error) {
	if len(b) < 5 || int(binary.BigEndian.Uint32(b[1:5])) > len(b)-5 {
		return InstructionRecord{}, fmt.Errorf("decode instruction: %d bytes, truncated", len(b))
	}
	n := 5 + int(binary.BigEndian.Uint32(b[1:5]))
	rec := InstructionRecord{Instruction: &vigilpb.Instruction{}}
	if err := proto.Unmarshal(b[5:n], rec.Instruction); err != nil {
		return InstructionRecord{}, fmt.Errorf("decode instruction: %w", err)
	}
	if b[0] == 1 {
		rec.Ack = &vigilpb.InstructionAck{}
		if err := proto.Unmarshal(b[n:], rec.Ack); err != nil {
			return InstructionRecord{}, fmt.Errorf("decode instruction ack: %w", err)
		}
	}
	return rec, nil
}
