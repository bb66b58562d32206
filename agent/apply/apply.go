// Package apply carries out the server's decisions on the agent: it turns
// verdict tables and diffs into the kernel's table, runs protection
// instructions, switches to the table's fail mode while the server is
// unreachable, and kills executables on the kill list that the kernel did not
// know yet.
//
// The agent's stream client calls an Applier for every table, diff and
// instruction; the event loop calls OnExec for every exec. The Applier owns
// the state files table.pb and instructions.json in its directory, which let
// a restarted agent know the table version the pinned kernel state carries
// and which instructions it already executed.
package apply

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/vigilsec/vigil/agent/dataplane"
	"github.com/vigilsec/vigil/agent/proctable"
	"github.com/vigilsec/vigil/agent/spool"
	vigilpb "github.com/vigilsec/vigil/gen/vigil/v1"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

// Errors the stream client branches on.
var (
	// ErrStaleBase means a diff does not apply to the table the agent holds;
	// the agent asks for a full table by sending Hello again.
	ErrStaleBase = errors.New("diff base version is not the table held")
	// ErrNoProcess is what a Kernel returns when a kill target is gone.
	ErrNoProcess = dataplane.ErrNoProcess
)

// Kernel is the part of the dataplane the Applier drives. Implementations
// must be safe for concurrent use.
type Kernel interface {
	// ApplyTable replaces the kernel's table atomically; on error the
	// previous table stays in force.
	ApplyTable(t dataplane.Table) error
	// PendDenies puts into force at once the denies of rules about to be
	// appended to the kernel's table, those no allow can precede; the next
	// ApplyTable or ClearPending removes them.
	PendDenies(egress []dataplane.EgressRule, ingress []dataplane.IngressRule) (int, error)
	// ClearPending removes the denies of PendDenies.
	ClearPending() error
	// Kill kills the process (pid, start time), and its descendants when
	// tree is set; it returns an error wrapping ErrNoProcess when it is gone.
	Kill(pid uint32, startNs uint64, tree bool) error
	// StartTime returns a live process's start time (ErrNoProcess if gone).
	StartTime(pid uint32) (uint64, error)
	// Cut destroys the open connections to p and returns how many.
	Cut(p dataplane.Peer) (int, error)
	// Restore lifts a cut.
	Restore(p dataplane.Peer) error
}

// Resolver maps executables to kernel identities; *proctable.Table is one.
type Resolver interface {
	// Identities returns the identities seen with a lowercase hex SHA-256.
	Identities(sha string) []dataplane.ExecIdentity
	// HashFile returns the hash and identity of the file at path.
	HashFile(path string) (string, dataplane.ExecIdentity, error)
}

// Config configures an Applier.
type Config struct {
	Kernel   Kernel
	Resolver Resolver
	StateDir string // holds table.pb and instructions.json (created 0700)
	Scope    string // cgroup v2 directory the agent protects
	// Server are the server's addresses, exempt from quarantine; with
	// ServerPort, the one destination the closed fail mode allows.
	Server     []netip.Prefix
	ServerPort uint16
}

// Applier holds the agent's verdict table and carries out instructions.
// All methods are safe for concurrent use.
type Applier struct {
	cfg Config

	mu     sync.Mutex
	table  *vigilpb.VerdictTable           // the table in the kernel; guarded by mu
	online bool                            // server reachable; guarded by mu
	used   map[dataplane.ExecIdentity]bool // identities in the kernel table; guarded by mu
	instr  instructionState                // guarded by mu
}

// instructionState is what instructions.json keeps.
type instructionState struct {
	Last   uint64                     `json:"last_seq"`
	Recent map[uint64]json.RawMessage `json:"recent_acks"` // seq -> ack (protojson)
}

const (
	tableFile       = "table.pb"
	instructionFile = "instructions.json"
	recentAcks      = 256
)

// New returns an Applier with the state saved in cfg.StateDir. It starts
// offline: Reconcile writes the saved table in its fail-mode form until
// SetOnline(true) is called.
func New(cfg Config) (*Applier, error) {
	if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
		return nil, fmt.Errorf("create state dir: %w", err)
	}
	a := &Applier{cfg: cfg, table: &vigilpb.VerdictTable{}}
	a.instr.Recent = make(map[uint64]json.RawMessage)

	if b, err := os.ReadFile(filepath.Join(cfg.StateDir, tableFile)); err == nil {
		if err := proto.Unmarshal(b, a.table); err != nil {
			return nil, fmt.Errorf("decode %s: %w", filepath.Join(cfg.StateDir, tableFile), err)
		}
	}
	if b, err := os.ReadFile(filepath.Join(cfg.StateDir, instructionFile)); err == nil {
		if err := json.Unmarshal(b, &a.instr); err != nil {
			return nil, fmt.Errorf("decode %s: %w", filepath.Join(cfg.StateDir, instructionFile), err)
		}
	}
	return a, nil
}

// Version returns the version of the table the kernel enforces (0: none).
func (a *Applier) Version() uint64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.table.Version
}

// Table returns a copy of the table the kernel enforces.
func (a *Applier) Table() *vigilpb.VerdictTable {
	a.mu.Lock()
	defer a.mu.Unlock()
	return proto.Clone(a.table).(*vigilpb.VerdictTable)
}

// LastInstruction returns the highest instruction sequence executed.
func (a *Applier) LastInstruction() uint64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.instr.Last
}

// Reconcile writes the saved table to the kernel again, resolving
// identities afresh; the agent calls it at start.
func (a *Applier) Reconcile() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.table.Version == 0 {
		return nil
	}
	return a.write(a.table)
}

// SetOnline switches between the table as sent and its fail-mode form.
func (a *Applier) SetOnline(online bool) error {
	a.mu.Lock()
	defer a.mu.Unlock()

	if a.online == online {
		return nil
	}
	a.online = online
	if a.table.Version == 0 {
		return nil
	}
	return a.write(a.table)
}

// ApplyTable replaces the table and returns the acknowledgement to send:
// the version with no error once the kernel has it, or the error while the
// previous table stays in force. The denies the table adds are enforced
// before the kernel's table swap finishes; the acknowledgement waits for
// the swap, so an acknowledged version is one the kernel enforces whole.
func (a *Applier) ApplyTable(t *vigilpb.VerdictTable) *vigilpb.TableAck {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.replace(t)
}

// ApplyDiff applies d to the table held and writes the result like
// ApplyTable. It returns ErrStaleBase, and changes nothing, when d's base is
// not the version held.
func (a *Applier) ApplyDiff(d *vigilpb.TableDiff) (*vigilpb.TableAck, error) {
	a.mu.Lock()
	defer a.mu.Unlock()

	if a.table.Version == 0 || d.BaseVersion != a.table.Version {
		return nil, fmt.Errorf("diff %d->%d, held %d: %w",
			d.BaseVersion, d.Version, a.table.Version, ErrStaleBase)
	}
	a.pendDenies(d)
	ack := a.replace(applyDiff(a.table, d))
	if err := a.cfg.Kernel.ClearPending(); err != nil && ack.Error == "" {
		ack.Error = "enforced, but pending denies not cleared: " + err.Error()
	}
	return ack, nil
}

// pendDenies hands the kernel the rules d appends before the whole table
// is built and translated, which takes long for a large table, so the
// denies among them are in force at once. It does so only online: offline
// tables are rewritten for the fail mode. Whatever fails here is left to
// the whole table's write, which reports it.
func (a *Applier) pendDenies(d *vigilpb.TableDiff) {
	if !a.online {
		return
	}
	tr := translator{res: a.cfg.Resolver, scope: a.cfg.Scope, used: map[dataplane.ExecIdentity]bool{}}
	var egress []dataplane.EgressRule
	for _, e := range d.EgressAdded {
		rules, err := tr.egress(e)
		if err != nil {
			return
		}
		egress = append(egress, rules...)
	}
	var in []dataplane.IngressRule
	if !d.SetProtectedPorts {
		var err error
		if in, err = ingress(d.IngressAdded); err != nil {
			return
		}
	}
	_, _ = a.cfg.Kernel.PendDenies(egress, in)
}

// OnExec is called for every exec the event loop sees. When the fresh hash
// of the executable is on the kill list and the kernel did not kill it, the
// process and every descendant it forked meanwhile are killed from user
// space at once, and the table is rewritten so the kernel kills later execs
// of that file itself. It returns whether it killed the process.
//
// BUG: the first exec of a listed file the kernel did not know yet runs
// until the agent has read the event, hashed the file and killed it, a
// window of milliseconds in which the new image executes.
func (a *Applier) OnExec(p proctable.Process) (bool, error) {
	a.mu.Lock()
	defer a.mu.Unlock()

	killed := false
	var err error
	if p.SHA256 != "" && hasString(a.table.KillOnExec, p.SHA256) {
		err = a.cfg.Kernel.Kill(p.PID, p.StartTimeNs, true)
		killed = err == nil
		if errors.Is(err, ErrNoProcess) {
			err = nil // the kernel killed it already
		}
	}
	if a.referenced(p) && !a.used[p.Exe] && a.table.Version != 0 {
		err = errors.Join(err, a.write(a.table))
	}
	return killed, err
}

// referenced reports whether the table names p's executable anywhere.
func (a *Applier) referenced(p proctable.Process) bool {
	if p.SHA256 != "" && hasString(a.table.KillOnExec, p.SHA256) {
		return true
	}
	for _, e := range a.table.Egress {
		s := e.GetSubject()
		if (s.GetExecutableSha256() != "" && strings.EqualFold(s.GetExecutableSha256(), p.SHA256)) ||
			(s.GetExecutablePath() != "" && s.GetExecutablePath() == p.Path) {
			return true
		}
	}
	return false
}

// replace writes t to the kernel and, on success, makes it the table held.
func (a *Applier) replace(t *vigilpb.VerdictTable) *vigilpb.TableAck {
	if err := a.write(t); err != nil {
		return &vigilpb.TableAck{Version: t.Version, Error: err.Error()}
	}
	a.table = proto.Clone(t).(*vigilpb.VerdictTable)
	if err := a.saveTable(); err != nil {
		return &vigilpb.TableAck{Version: t.Version, Error: "enforced but not saved: " + err.Error()}
	}
	return &vigilpb.TableAck{Version: t.Version}
}

// write translates t, adjusts it for the fail mode, and writes it to the
// kernel. The caller holds mu.
func (a *Applier) write(t *vigilpb.VerdictTable) error {
	tr := translator{res: a.cfg.Resolver, scope: a.cfg.Scope}
	kt, err := tr.table(t)
	if err != nil {
		return fmt.Errorf("translate table %d: %w", t.Version, err)
	}
	kt.QuarantineExempt = a.cfg.Server
	if !a.online {
		kt = failModeTable(kt, t.FailMode, a.cfg.Server, a.cfg.ServerPort)
	}

	if err := a.cfg.Kernel.ApplyTable(kt); err != nil {
		return fmt.Errorf("apply table %d: %w", t.Version, err)
	}
	a.used = tr.used
	return nil
}

func (a *Applier) saveTable() error {
	b, err := proto.Marshal(a.table)
	if err != nil {
		return fmt.Errorf("encode table: %w", err)
	}
	return spool.WriteFileAtomic(filepath.Join(a.cfg.StateDir, tableFile), b, 0o600)
}

// Execute carries out an instruction received at received and returns its
// acknowledgement. An instruction whose seq is not above the last executed
// one is not executed again: it is acknowledged with the outcome recorded
// the first time (FAILED when that record is gone). The error reports a
// failure to save the record; the acknowledgement stands regardless.
func (a *Applier) Execute(ins *vigilpb.Instruction,
	received time.Time) (*vigilpb.InstructionAck, error) {
	a.mu.Lock()
	defer a.mu.Unlock()

	if ins.Seq <= a.instr.Last {
		return a.recorded(ins.Seq), nil
	}
	ack := a.execute(ins)
	ack.Seq = ins.Seq
	ack.LatencyUs = uint64(time.Since(received).Microseconds())
	return ack, a.record(ack)
}

// recorded returns the acknowledgement recorded for seq.
func (a *Applier) recorded(seq uint64) *vigilpb.InstructionAck {
	ack := &vigilpb.InstructionAck{}
	if raw, ok := a.instr.Recent[seq]; ok && protojson.Unmarshal(raw, ack) == nil {
		return ack
	}
	return &vigilpb.InstructionAck{
		Seq: seq, Outcome: vigilpb.InstructionOutcome_INSTRUCTION_OUTCOME_FAILED,
		Error: "already executed; outcome no longer recorded",
	}
}

// record advances the last executed seq, keeps the acknowledgement for
// duplicates, and saves both.
func (a *Applier) record(ack *vigilpb.InstructionAck) error {
	raw, err := protojson.Marshal(ack)
	if err != nil {
		return fmt.Errorf("encode ack %d: %w", ack.Seq, err)
	}
	a.instr.Last = ack.Seq
	a.instr.Recent[ack.Seq] = raw
	for seq := range a.instr.Recent {
		if seq+recentAcks <= ack.Seq {
			delete(a.instr.Recent, seq)
		}
	}

	b, err := json.Marshal(&a.instr)
	if err != nil {
		return fmt.Errorf("encode instruction state: %w", err)
	}
	return spool.WriteFileAtomic(filepath.Join(a.cfg.StateDir, instructionFile), b, 0o600)
}

// execute runs one instruction; the caller holds mu.
func (a *Applier) execute(ins *vigilpb.Instruction) *vigilpb.InstructionAck {
	switch ins.Kind {
	case vigilpb.InstructionKind_INSTRUCTION_KIND_KILL:
		return a.kill(ins)
	case vigilpb.InstructionKind_INSTRUCTION_KIND_CUT:
		return a.cut(ins.Peer, true)
	case vigilpb.InstructionKind_INSTRUCTION_KIND_RESTORE:
		return a.cut(ins.Peer, false)
	case vigilpb.InstructionKind_INSTRUCTION_KIND_KILL_ON_EXEC:
		return a.change(func(t *vigilpb.VerdictTable) error {
			if len(ins.Sha256) != 64 {
				return fmt.Errorf("sha256 %q is not 64 hex digits", ins.Sha256)
			}
			t.KillOnExec = addStrings(t.KillOnExec, []string{strings.ToLower(ins.Sha256)})
			return nil
		})
	case vigilpb.InstructionKind_INSTRUCTION_KIND_QUARANTINE,
		vigilpb.InstructionKind_INSTRUCTION_KIND_RELEASE:
		q := ins.Kind == vigilpb.InstructionKind_INSTRUCTION_KIND_QUARANTINE
		return a.change(func(t *vigilpb.VerdictTable) error { t.Quarantined = q; return nil })
	case vigilpb.InstructionKind_INSTRUCTION_KIND_REAUTHENTICATE:
		return done()
	}
	return failed(fmt.Errorf("instruction kind %s is not supported", ins.Kind))
}

// kill kills the named process, looking its start time up when not given.
func (a *Applier) kill(ins *vigilpb.Instruction) *vigilpb.InstructionAck {
	start := ins.StartTimeNs
	if start == 0 {
		var err error
		if start, err = a.cfg.Kernel.StartTime(ins.Pid); err != nil {
			return killOutcome(err)
		}
	}
	return killOutcome(a.cfg.Kernel.Kill(ins.Pid, start, ins.Tree))
}

func killOutcome(err error) *vigilpb.InstructionAck {
	switch {
	case err == nil:
		return done()
	case errors.Is(err, ErrNoProcess):
		return &vigilpb.InstructionAck{
			Outcome: vigilpb.InstructionOutcome_INSTRUCTION_OUTCOME_NOT_FOUND, Error: err.Error(),
		}
	}
	return failed(err)
}

// cut blocks the peer and destroys its connections at once, then records
// it in the table's cut list so a restarted agent keeps it; restore lifts
// the block and removes it from the list. Neither waits for a table swap:
// the kernel's table changes only in its cut peers, which it applies
// without one.
func (a *Applier) cut(spec string, cut bool) *vigilpb.InstructionAck {
	peer, err := ParsePeer(spec)
	if err != nil {
		return failed(err)
	}
	if cut {
		_, err = a.cfg.Kernel.Cut(peer)
	} else {
		err = a.cfg.Kernel.Restore(peer)
	}
	if err != nil {
		return failed(err)
	}

	canonical := peerString(peer)
	return a.change(func(t *vigilpb.VerdictTable) error {
		if cut {
			t.CutPeers = addStrings(t.CutPeers, []string{canonical})
		} else {
			t.CutPeers = removeStrings(removeStrings(t.CutPeers, []string{canonical}), []string{spec})
		}
		return nil
	})
}

// change edits a copy of the table and writes it; the version stays, since
// the server's next table or diff carries the same change.
func (a *Applier) change(edit func(*vigilpb.VerdictTable) error) *vigilpb.InstructionAck {
	t := proto.Clone(a.table).(*vigilpb.VerdictTable)
	if err := edit(t); err != nil {
		return failed(err)
	}
	if err := a.write(t); err != nil {
		return failed(err)
	}
	a.table = t
	if err := a.saveTable(); err != nil {
		return failed(fmt.Errorf("enforced but not saved: %w", err))
	}
	return done()
}

func done() *vigilpb.InstructionAck {
	return &vigilpb.InstructionAck{Outcome: vigilpb.InstructionOutcome_INSTRUCTION_OUTCOME_DONE}
}

func failed(err error) *vigilpb.InstructionAck {
	return &vigilpb.InstructionAck{
		Outcome: vigilpb.InstructionOutcome_INSTRUCTION_OUTCOME_FAILED, Error: err.Error(),
	}
}
