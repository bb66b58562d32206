package api

import (
	"context"

	vigilpb "github.com/vigilsec/vigil/gen/vigil/v1"
)

// Engine is the decision brain the API serves: policy, evaluation, detection
// and decisions. The server's transport layer calls it; it never calls the
// transport back except through the Sink it was given. Implementations are
// safe for concurrent use.
type Engine interface {
	// ValidatePolicy checks a document without applying it.
	ValidatePolicy(doc *vigilpb.PolicyDocument) []*vigilpb.PolicyError
	// ApplyPolicy validates, stores and activates a document, then recompiles
	// and pushes every affected agent's table. A rejected document changes
	// nothing and returns its errors with version 0.
	ApplyPolicy(ctx context.Context, doc *vigilpb.PolicyDocument, appliedBy string) (uint64, []*vigilpb.PolicyError, error)
	// Policy returns a stored policy version (0: the running one).
	Policy(version uint64) (*vigilpb.GetPolicyResponse, error)
	// PolicyHistory lists stored versions, newest first, without text.
	PolicyHistory() ([]*vigilpb.GetPolicyResponse, error)

	// AgentOnline records an agent's hello (addresses, posture, capabilities)
	// and returns the full table it must enforce now.
	AgentOnline(ctx context.Context, agent string, hello *vigilpb.Hello) (*vigilpb.VerdictTable, error)
	// AgentOffline records that an agent's stream closed.
	AgentOffline(agent string)
	// TableAcked records the table version an agent enforces.
	TableAcked(agent string, version uint64)
	// Ingest runs detectors over a batch of stored agent events.
	Ingest(ctx context.Context, agent string, events []*vigilpb.Event) error
	// Posture records a posture update and re-evaluates the device.
	Posture(ctx context.Context, agent string, posture *vigilpb.Posture) error
	// Counters records an agent's kernel counters (losses lower device trust).
	Counters(ctx context.Context, agent string, counters *vigilpb.Counters) error

	// Report records a result from an existing security system as a finding.
	Report(ctx context.Context, req *vigilpb.ReportRequest) (*vigilpb.ReportResponse, error)
	// Entities lists entities of a kind ("" for all) with levels and findings.
	Entities(kind string) ([]*vigilpb.Entity, error)
	// Explain judges a connection the way the agent's kernel would.
	Explain(req *vigilpb.ExplainRequest) (*vigilpb.ExplainResponse, error)
	// Level returns an entity's current level.
	Level(entity string) string
	// RuleName returns the name of the running policy's rule with a compiled
	// rule id, or "" when there is none.
	RuleName(id uint32) string

	// Cut records that an agent's connections to peer ("IP" or "IP:PORT")
	// are cut: the peer joins the agent's table (cut_peers) and stays there,
	// across reconnects, until Restore. The transport sends the matching
	// instruction itself.
	Cut(ctx context.Context, agent, peer string) error
	// Restore removes peer from the agent's cut_peers.
	Restore(ctx context.Context, agent, peer string) error
	// AgentRevoked forgets a revoked agent: its addresses stop admitting it
	// to any service and every other table is recompiled without it.
	AgentRevoked(ctx context.Context, agent string) error
}

// Sink is how the engine reaches agents and the event record. The transport
// layer implements it.
type Sink interface {
	// PushDiff queues a table diff for an agent (dropped if the agent is
	// offline: it gets a full table at its next hello).
	PushDiff(agent string, diff *vigilpb.TableDiff)
	// PushInstruction stores an instruction for an agent, assigns its
	// sequence number and delivers it now or when the agent reconnects.
	PushInstruction(agent string, ins *vigilpb.Instruction) (uint64, error)
	// Record stores a server-side event (finding, level, instruction,
	// policy) and publishes it to followers and exporters.
	Record(ev *vigilpb.Event)
}
