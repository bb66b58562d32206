package api

import (
	"context"
	"errors"
	"net/netip"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	vigilpb "github.com/vigilsec/vigil/gen/vigil/v1"
	"github.com/vigilsec/vigil/server/registry"
	"github.com/vigilsec/vigil/server/store"
)

// Query limits.
const (
	defaultQueryLimit = 1000
	maxQueryLimit     = 5000
	// maxQueryBytes bounds the events of one QueryEvents response, below
	// MaxMessageBytes with room for the rest of the message.
	maxQueryBytes = MaxMessageBytes - 64<<10
)

// ListAgents lists enrolled agents with their device level.
func (s *Server) ListAgents(context.Context, *vigilpb.ListAgentsRequest) (*vigilpb.ListAgentsResponse, error) {
	agents := s.cfg.Registry.List()
	for _, a := range agents {
		a.Level = s.cfg.Engine.Level("device/" + a.Name)
	}
	return &vigilpb.ListAgentsResponse{Agents: agents}, nil
}

// RevokeAgent revokes an agent for good and closes its stream.
func (s *Server) RevokeAgent(ctx context.Context,
	req *vigilpb.RevokeAgentRequest) (*vigilpb.RevokeAgentResponse, error) {
	err := s.cfg.Registry.Revoke(req.GetName())
	if errors.Is(err, registry.ErrUnknown) {
		return nil, status.Errorf(codes.NotFound, "agent %q is not enrolled", req.GetName())
	}
	if err != nil {
		return nil, s.internal("revoke agent", err)
	}
	if err := s.cfg.Engine.AgentRevoked(ctx, req.GetName()); err != nil {
		return nil, s.engineErr("revoke agent", err)
	}
	s.log.Info("agent revoked", "agent", req.GetName(), "peer", identityFrom(ctx).String())
	return &vigilpb.RevokeAgentResponse{}, nil
}

// ListEntities lists entities with levels and findings.
func (s *Server) ListEntities(_ context.Context,
	req *vigilpb.ListEntitiesRequest) (*vigilpb.ListEntitiesResponse, error) {
	switch req.GetKind() {
	case "", "user", "device", "service", "process":
	default:
		return nil, status.Errorf(codes.InvalidArgument, "kind %q: want user, device, service or process", req.GetKind())
	}
	ents, err := s.cfg.Engine.Entities(req.GetKind())
	if err != nil {
		return nil, s.engineErr("list entities", err)
	}
	return &vigilpb.ListEntitiesResponse{Entities: ents}, nil
}

// ValidatePolicy checks a policy document without applying it.
func (s *Server) ValidatePolicy(_ context.Context,
	req *vigilpb.ValidatePolicyRequest) (*vigilpb.ValidatePolicyResponse, error) {
	if req.GetDocument() == nil {
		return nil, status.Error(codes.InvalidArgument, "document is required")
	}
	return &vigilpb.ValidatePolicyResponse{Errors: s.cfg.Engine.ValidatePolicy(req.GetDocument())}, nil
}

// ApplyPolicy validates, stores and pushes a policy.
func (s *Server) ApplyPolicy(ctx context.Context, req *vigilpb.ApplyPolicyRequest) (*vigilpb.ApplyPolicyResponse, error) {
	if req.GetDocument() == nil {
		return nil, status.Error(codes.InvalidArgument, "document is required")
	}
	version, perrs, err := s.cfg.Engine.ApplyPolicy(ctx, req.GetDocument(), identityFrom(ctx).String())
	if err != nil {
		return nil, s.engineErr("apply policy", err)
	}
	if len(perrs) == 0 {
		s.log.Info("policy applied", "policy_version", version)
	}
	return &vigilpb.ApplyPolicyResponse{Version: version, Errors: perrs}, nil
}

// GetPolicy returns the running policy or a stored version.
func (s *Server) GetPolicy(_ context.Context, req *vigilpb.GetPolicyRequest) (*vigilpb.GetPolicyResponse, error) {
	p, err := s.cfg.Engine.Policy(req.GetVersion())
	if err != nil {
		return nil, s.engineErr("get policy", err)
	}
	return p, nil
}

// PolicyHistory lists the stored policy versions.
func (s *Server) PolicyHistory(context.Context, *vigilpb.PolicyHistoryRequest) (*vigilpb.PolicyHistoryResponse, error) {
	ps, err := s.cfg.Engine.PolicyHistory()
	if err != nil {
		return nil, s.engineErr("policy history", err)
	}
	return &vigilpb.PolicyHistoryResponse{Policies: ps}, nil
}

// QueryEvents returns stored events, oldest first: the newest matches, at
// most the limit asked (capped at maxQueryLimit) and as many as fit in one
// message; Truncated says the size left older ones out.
func (s *Server) QueryEvents(_ context.Context, req *vigilpb.QueryEventsRequest) (*vigilpb.QueryEventsResponse, error) {
	limit := int(req.GetLimit())
	if limit == 0 {
		limit = defaultQueryLimit
	}
	limit = min(limit, maxQueryLimit)
	f := store.EventFilter{Agent: req.GetAgent(), Kinds: req.GetKinds(), Since: req.GetSinceUnixNano(),
		Limit: limit}
	evs, truncated, err := s.cfg.Store.QueryEventsBounded(f, maxQueryBytes)
	if err != nil {
		return nil, s.internal("query events", err)
	}
	return &vigilpb.QueryEventsResponse{Events: evs, Truncated: truncated}, nil
}

// FollowEvents streams events as they are stored. A follower that reads
// slower than events arrive is ended with ResourceExhausted; it can query
// what it missed and follow again.
func (s *Server) FollowEvents(req *vigilpb.FollowEventsRequest, stream vigilpb.AdminService_FollowEventsServer) error {
	s.audit(stream.Context(), vigilpb.AdminService_FollowEvents_FullMethodName, req, nil)
	f := store.EventFilter{Agent: req.GetAgent(), Kinds: req.GetKinds()}
	sub := s.cfg.Dispatcher.hub.Subscribe(f.Match, followBuffer)
	defer sub.Close()
	for {
		select {
		case ev := <-sub.C():
			if err := stream.Send(ev); err != nil {
				return err
			}
		case <-sub.Done():
			return status.Error(codes.ResourceExhausted,
				"follower fell behind; query the missed events and follow again")
		case <-stream.Context().Done():
			return stream.Context().Err()
		case <-s.quit:
			return errShutdown
		}
	}
}

// Explain says what an agent's kernel would do with a connection.
func (s *Server) Explain(_ context.Context, req *vigilpb.ExplainRequest) (*vigilpb.ExplainResponse, error) {
	if req.GetAgent() == "" {
		return nil, status.Error(codes.InvalidArgument, "agent is required")
	}
	if _, err := netip.ParseAddrPort(req.GetDestination()); err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "destination %q: want IP:PORT", req.GetDestination())
	}
	resp, err := s.cfg.Engine.Explain(req)
	if err != nil {
		return nil, s.engineErr("explain", err)
	}
	return resp, nil
}

// Report records a result from an existing security system.
func (s *Server) Report(ctx context.Context, req *vigilpb.ReportRequest) (*vigilpb.ReportResponse, error) {
	if req.GetEntity() == "" || req.GetSource() == "" {
		return nil, status.Error(codes.InvalidArgument, "entity and source are required")
	}
	resp, err := s.cfg.Engine.Report(ctx, req)
	if err != nil {
		return nil, s.engineErr("report", err)
	}
	return resp, nil
}

// Kill asks an agent to kill a process and waits for its acknowledgement.
func (s *Server) Kill(ctx context.Context, req *vigilpb.KillRequest) (*vigilpb.InstructionResponse, error) {
	if req.GetPid() == 0 {
		return nil, status.Error(codes.InvalidArgument, "pid is required")
	}
	return s.instruct(ctx, req.GetAgent(), &vigilpb.Instruction{
		Kind: vigilpb.InstructionKind_INSTRUCTION_KIND_KILL, Pid: req.GetPid(),
		StartTimeNs: req.GetStartTimeNs(), Tree: req.GetTree(), Reason: req.GetReason(),
	})
}

// Cut cuts and blocks an agent's connections to a peer. The cut becomes part
// of the agent's table, so it holds across reconnects until Restore.
func (s *Server) Cut(ctx context.Context, req *vigilpb.CutRequest) (*vigilpb.InstructionResponse, error) {
	if err := s.checkPeerRequest(req.GetAgent(), req.GetPeer()); err != nil {
		return nil, err
	}
	if err := s.cfg.Engine.Cut(ctx, req.GetAgent(), req.GetPeer()); err != nil {
		return nil, s.engineErr("cut", err)
	}
	return s.instruct(ctx, req.GetAgent(), &vigilpb.Instruction{
		Kind: vigilpb.InstructionKind_INSTRUCTION_KIND_CUT, Peer: req.GetPeer(), Reason: req.GetReason(),
	})
}

// Restore lifts a cut.
func (s *Server) Restore(ctx context.Context, req *vigilpb.RestoreRequest) (*vigilpb.InstructionResponse, error) {
	if err := s.checkPeerRequest(req.GetAgent(), req.GetPeer()); err != nil {
		return nil, err
	}
	if err := s.cfg.Engine.Restore(ctx, req.GetAgent(), req.GetPeer()); err != nil {
		return nil, s.engineErr("restore", err)
	}
	return s.instruct(ctx, req.GetAgent(), &vigilpb.Instruction{
		Kind: vigilpb.InstructionKind_INSTRUCTION_KIND_RESTORE, Peer: req.GetPeer(), Reason: req.GetReason(),
	})
}

func (s *Server) checkPeerRequest(agent, peer string) error {
	if !s.cfg.Registry.Known(agent) {
		return status.Errorf(codes.NotFound, "agent %q is not enrolled", agent)
	}
	if !validPeer(peer) {
		return status.Errorf(codes.InvalidArgument, "peer %q: want IP or IP:PORT", peer)
	}
	return nil
}

func validPeer(peer string) bool {
	if _, err := netip.ParseAddr(peer); err == nil {
		return true
	}
	ap, err := netip.ParseAddrPort(peer)
	return err == nil && ap.Port() != 0
}

// instruct pushes an instruction and, when the agent is online, waits for
// its acknowledgement up to AckTimeout or the request's deadline. An offline
// or silent agent leaves the outcome unspecified: the instruction stays
// queued and is delivered when the agent reconnects.
func (s *Server) instruct(ctx context.Context, agent string,
	ins *vigilpb.Instruction) (*vigilpb.InstructionResponse, error) {
	if !s.cfg.Registry.Known(agent) {
		return nil, status.Errorf(codes.NotFound, "agent %q is not enrolled", agent)
	}
	ins.IssuedUnixNano = time.Now().UnixNano()
	seq, err := s.cfg.Dispatcher.PushInstruction(agent, ins)
	if err != nil {
		return nil, s.internal("push instruction", err)
	}
	resp := &vigilpb.InstructionResponse{Seq: seq}
	if s.cfg.Registry.Conn(agent) == nil {
		return resp, nil
	}

	wctx, cancel := context.WithTimeout(ctx, s.cfg.AckTimeout)
	defer cancel()
	ack, err := s.cfg.Dispatcher.waitAck(wctx, agent, seq)
	if err != nil {
		return nil, s.internal("wait for instruction ack", err)
	}
	if ack != nil {
		resp.Outcome, resp.Error, resp.LatencyUs = ack.GetOutcome(), ack.GetError(), ack.GetLatencyUs()
	}
	return resp, nil
}
