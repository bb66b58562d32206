package dataplane

import (
	"net/netip"
)

// Verdict is what the kernel does with a connection that matches a rule.
type Verdict uint8

// Verdicts, in the numbering the BPF programs use.
const (
	VerdictAllow Verdict = 1
	VerdictDeny  Verdict = 2
	VerdictAudit Verdict = 3
)

// Protocol is the transport a rule applies to.
type Protocol uint8

// Protocols, in the numbering the BPF programs use.
const (
	ProtoAny Protocol = 1
	ProtoTCP Protocol = 2
	ProtoUDP Protocol = 3
)

// ExecIdentity names an executable file by the identity the kernel sees at
// exec: the device and inode of the file. Names, argv[0] and typed paths are
// spoofable and never used for identity.
type ExecIdentity struct {
	Dev uint64 // device number as the kernel encodes it (new_encode_dev)
	Ino uint64 // inode number
}

// Subject selects the processes in scope a rule applies to. Every field that
// is set must match; the zero Subject matches every process in scope.
type Subject struct {
	UID      *uint32       // real uid, nil for any
	Exec     *ExecIdentity // executable identity, nil for any
	CgroupID uint64        // cgroup v2 id; processes in it or below match; 0 for any
}

// EgressRule is one outbound rule.
type EgressRule struct {
	RuleID  uint32       // reported with every verdict it takes
	Dest    netip.Prefix // destination prefix (IPv4 or IPv6)
	PortMin uint16       // first destination port, inclusive; 0 with PortMax 0: every port
	PortMax uint16       // last destination port, inclusive
	Proto   Protocol
	Subject Subject
	Verdict Verdict
}

// PortRange is an inclusive range of local ports for one transport; Min
// and Max both 0 cover every port.
type PortRange struct {
	Min, Max uint16
	Proto    Protocol
	Default  Verdict // verdict for peers no ingress rule matches
}

// IngressRule is one inbound rule for a protected local port range.
type IngressRule struct {
	RuleID  uint32
	Peer    netip.Prefix // remote address prefix
	PortMin uint16       // first local port, inclusive; 0 with PortMax 0: every port
	PortMax uint16       // last local port, inclusive
	Proto   Protocol
	Verdict Verdict
}

// Peer names a remote endpoint to cut: an address and optionally a port
// (0 means every port).
type Peer struct {
	Addr netip.Addr
	Port uint16
}

// Table is everything the kernel enforces for one scope. ApplyTable replaces
// it atomically: no connection is ever judged against a partly written table.
type Table struct {
	DefaultEgress  Verdict // zero allows
	Egress         []EgressRule
	ProtectedPorts []PortRange
	Ingress        []IngressRule
	KillOnExec     []ExecIdentity
	Quarantined    bool
	// Allowed while quarantined: the server's addresses.
	QuarantineExempt []netip.Prefix
	Cut              []Peer
}

// EventKind classifies a kernel event.
type EventKind uint8

// Event kinds, in the numbering the BPF programs use.
const (
	EventExec    EventKind = 1
	EventFork    EventKind = 2
	EventExit    EventKind = 3
	EventConnect EventKind = 4 // outbound connect or UDP send
	EventAccept  EventKind = 5 // inbound connection established or dropped
)

// Event is one decoded kernel observation.
type Event struct {
	Kind          EventKind
	TimeNs        uint64 // CLOCK_BOOTTIME of the event
	PID           uint32 // thread-group id
	TID           uint32
	PPID          uint32
	StartTimeNs   uint64 // task->start_time of the process (with PID, its identity)
	ParentStartNs uint64
	UID, GID      uint32
	CgroupID      uint64
	Exe           ExecIdentity // exec events
	Filename      string       // exec: the path as passed to execve
	Comm          string       // task name (display only)
	ExitCode      int32        // exit events
	Signal        uint32       // exit events: terminating signal, 0 if none
	ChildPID      uint32       // fork events
	ChildStartNs  uint64       // fork events
	// Connection events.
	Proto   Protocol
	Local   netip.AddrPort
	Remote  netip.AddrPort // IPv4-mapped IPv6 is reported as IPv4
	Verdict Verdict
	RuleID  uint32 // 0: the default verdict decided
	Inbound bool
}

// Capabilities says which hooks loaded and what can therefore be enforced.
type Capabilities struct {
	Hooks           map[string]bool // hook name ("cgroup/connect4") -> loaded
	Enforcement     []string        // "egress", "ingress", "kill", "kill-on-exec", "cut", "quarantine"
	ExecEnforcement string          // "lsm", "kill-on-exec" or ""
}

// Counters are the kernel's per-CPU counters, summed.
type Counters struct {
	EventsEmitted uint64
	EventsLost    uint64            // ring buffer full
	Verdicts      map[string]uint64 // by reason, e.g. "deny-rule", "allow-default"
}
