package api

import (
	"context"
	"errors"
	"io"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	vigilpb "github.com/vigilsec/vigil/gen/vigil/v1"
	"github.com/vigilsec/vigil/server/registry"
	"github.com/vigilsec/vigil/server/store"
)

// Connect serves one agent's stream. The agent's first message must be a
// Hello naming the agent its certificate was issued to. The server answers
// with the full table, then the agent's pending instructions in order, then
// whatever the engine pushes. Messages from the agent are handled in order
// on one goroutine; this goroutine only sends.
func (s *Server) Connect(stream vigilpb.AgentService_ConnectServer) error {
	ctx := stream.Context()
	id := identityFrom(ctx)
	hello, err := s.readHello(stream, id.Name)
	if err != nil {
		return err
	}

	s.clampPosture(id.Name, hello.GetPosture())
	sess := newSession(id.Name, id.Serial, sendQueueLen)
	sess.holdDiffs()
	if err := s.cfg.Registry.Online(id.Name, id.Serial, hello, sess); err != nil {
		return agentRefused(err)
	}
	s.cfg.Metrics.StreamOpened()
	s.log.Info("agent online", "agent", id.Name, "peer", peerHost(ctx))
	defer s.agentGone(sess)

	if err := s.sendTable(ctx, sess, hello); err != nil {
		return err
	}
	if err := s.cfg.Dispatcher.deliverPending(sess); err != nil {
		return s.internal("load pending instructions", err)
	}
	s.receivers.Add(1)
	go s.receive(ctx, stream, sess)
	return s.sendLoop(stream, sess)
}

func (s *Server) readHello(stream vigilpb.AgentService_ConnectServer, name string) (*vigilpb.Hello, error) {
	first, err := stream.Recv()
	if err != nil {
		return nil, err
	}
	hello := first.GetHello()
	if hello == nil {
		return nil, status.Error(codes.InvalidArgument, "the first message on the stream must be a hello")
	}
	if err := checkHello(hello, name); err != nil {
		return nil, err
	}
	return hello, nil
}

func agentRefused(err error) error {
	switch {
	case errors.Is(err, registry.ErrRevoked):
		return status.Error(codes.PermissionDenied, "agent is revoked")
	case errors.Is(err, registry.ErrStaleCert):
		return status.Error(codes.PermissionDenied, "certificate was superseded by a later enrollment")
	case errors.Is(err, registry.ErrUnknown):
		return status.Error(codes.PermissionDenied, "agent is not enrolled")
	}
	return status.Error(codes.Internal, "register agent: internal error")
}

// sendTable asks the engine for the agent's full table and queues it.
func (s *Server) sendTable(ctx context.Context, sess *session, hello *vigilpb.Hello) error {
	table, err := s.cfg.Engine.AgentOnline(ctx, sess.agent, hello)
	if err != nil {
		return s.engineErr("compile agent table", err)
	}
	sess.sendTable(table)
	s.cfg.Metrics.TablePushed("full")
	return nil
}

func (s *Server) agentGone(sess *session) {
	sess.Close(nil)
	if err := s.cfg.Registry.Offline(sess.agent, sess); err != nil {
		s.log.Error("record agent offline", "agent", sess.agent, "err", err)
	}
	s.cfg.Engine.AgentOffline(sess.agent)
	s.cfg.Metrics.StreamClosed(closeReason(sess.err))
	s.log.Info("agent offline", "agent", sess.agent, "err", sess.err)
}

func closeReason(err error) string {
	switch {
	case err == nil:
		return "closed"
	case errors.Is(err, errQueueFull):
		return "queue_full"
	case errors.Is(err, registry.ErrRevoked):
		return "revoked"
	case errors.Is(err, registry.ErrReplaced):
		return "replaced"
	}
	return "error"
}

// sendLoop writes queued messages until the session ends, the agent goes
// away or the server shuts down.
func (s *Server) sendLoop(stream vigilpb.AgentService_ConnectServer, sess *session) error {
	for {
		select {
		case msg := <-sess.queue:
			if err := stream.Send(msg); err != nil {
				sess.Close(err)
				return err
			}
		case <-sess.done:
			return sessionStatus(sess.err)
		case <-stream.Context().Done():
			return stream.Context().Err()
		case <-s.quit:
			sess.Close(errShutdown)
			return errShutdown
		}
	}
}

func sessionStatus(err error) error {
	switch {
	case err == nil || errors.Is(err, io.EOF):
		return nil
	case errors.Is(err, errQueueFull):
		return status.Error(codes.ResourceExhausted,
			"agent reads too slowly; reconnect to receive a full table")
	case errors.Is(err, registry.ErrRevoked):
		return status.Error(codes.PermissionDenied, "agent is revoked")
	case errors.Is(err, registry.ErrReplaced):
		return status.Error(codes.Aborted, "agent opened a newer stream")
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	return status.Error(codes.Internal, "agent stream: internal error")
}

// receive reads the agent's messages until the stream ends, then ends the
// session so the send loop returns.
func (s *Server) receive(ctx context.Context, stream vigilpb.AgentService_ConnectServer, sess *session) {
	defer s.receivers.Done()
	limit := newBucket(agentMsgRate, agentMsgBurst)
	for {
		msg, err := stream.Recv()
		if err != nil {
			sess.Close(err)
			return
		}
		if err := limit.wait(ctx); err != nil {
			sess.Close(err)
			return
		}
		s.cfg.Registry.Seen(sess.agent)
		if err := s.handle(ctx, sess, msg); err != nil {
			sess.Close(err)
			return
		}
	}
}

// handle processes one agent message. Errors it returns end the stream;
// the engine's own failures are logged and the stream goes on.
func (s *Server) handle(ctx context.Context, sess *session, msg *vigilpb.AgentMessage) error {
	agent := sess.agent
	switch body := msg.GetBody().(type) {
	case *vigilpb.AgentMessage_Events:
		return s.ingest(ctx, sess, body.Events)
	case *vigilpb.AgentMessage_Ack:
		if err := s.cfg.Dispatcher.acked(agent, body.Ack); err != nil && !errors.Is(err, store.ErrNotFound) {
			return s.internal("store instruction ack", err)
		}
	case *vigilpb.AgentMessage_TableAck:
		s.tableAcked(sess, body.TableAck)
	case *vigilpb.AgentMessage_Posture:
		s.clampPosture(agent, body.Posture)
		s.logErr(s.cfg.Registry.Posture(agent, body.Posture), "record posture", agent)
		s.logErr(s.cfg.Engine.Posture(ctx, agent, body.Posture), "evaluate posture", agent)
	case *vigilpb.AgentMessage_Counters:
		s.logErr(s.cfg.Registry.Counters(agent, body.Counters), "record counters", agent)
		s.logErr(s.cfg.Engine.Counters(ctx, agent, body.Counters), "evaluate counters", agent)
	case *vigilpb.AgentMessage_Hello:
		// A second hello asks for a full table (the agent lost track of
		// its version).
		if err := checkHello(body.Hello, agent); err != nil {
			return err
		}
		s.clampPosture(agent, body.Hello.GetPosture())
		sess.holdDiffs()
		return s.sendTable(ctx, sess, body.Hello)
	default:
		return status.Error(codes.InvalidArgument, "empty agent message")
	}
	return nil
}

// tableAcked records the table version an agent enforces now. An ack for
// a version this stream never carried is ignored: the agent cannot hold it.
func (s *Server) tableAcked(sess *session, ack *vigilpb.TableAck) {
	agent := sess.agent
	if !sess.sentVersion(ack.GetVersion()) {
		s.log.Warn("table ack for a version never sent ignored", "agent", agent,
			"table_version", ack.GetVersion())
		return
	}
	if ack.GetError() != "" {
		s.log.Warn("agent could not apply table", "agent", agent, "table_version", ack.GetVersion(),
			"err", ack.GetError())
		return
	}
	s.logErr(s.cfg.Registry.TableAcked(agent, ack.GetVersion()), "record table ack", agent)
	s.cfg.Engine.TableAcked(agent, ack.GetVersion())
}

// ingest stores a batch (skipping what is already stored, and passing the
// sequence numbers the agent says it dropped), gives the new events to the
// engine and to followers, then acknowledges the batch.
func (s *Server) ingest(ctx context.Context, sess *session, b *vigilpb.EventBatch) error {
	evs := b.GetEvents()
	if len(evs) > maxBatchEvents {
		return status.Errorf(codes.InvalidArgument, "event batch of %d events exceeds %d", len(evs), maxBatchEvents)
	}
	if err := checkDropped(b); err != nil {
		return err
	}
	batch := s.screen(sess.agent, evs, time.Now())
	batch.DroppedThrough = b.GetDroppedThrough()
	stored, mark, err := s.cfg.Store.AppendBatch(sess.agent, batch)
	if errors.Is(err, store.ErrZeroSeq) {
		return status.Error(codes.InvalidArgument, "event without a sequence number")
	}
	if err != nil {
		return s.internal("store events", err)
	}

	s.cfg.Metrics.Duplicates(len(batch.Events) - len(stored))
	if len(stored) > 0 {
		s.logErr(s.cfg.Engine.Ingest(ctx, sess.agent, stored), "ingest events", sess.agent)
	}
	for _, ev := range stored {
		s.cfg.Metrics.EventStored(ev.GetKind())
		s.cfg.Dispatcher.hub.Publish(ev)
	}
	sess.send(&vigilpb.ServerMessage{Body: &vigilpb.ServerMessage_EventsAck{EventsAck: &vigilpb.EventsAck{Seq: mark}}})
	return nil
}

// checkDropped refuses a drop mark that no event of the batch follows: an
// agent reports a drop together with the first event it still holds, so a
// mark alone, or one at or past its events, would skip events never sent.
func checkDropped(b *vigilpb.EventBatch) error {
	through := b.GetDroppedThrough()
	if through == 0 {
		return nil
	}
	for _, ev := range b.GetEvents() {
		if ev.GetSeq() > through {
			return nil
		}
	}
	return status.Errorf(codes.InvalidArgument,
		"dropped_through %d is not followed by an event of the batch", through)
}

// clampPosture cuts an agent's posture to its bounds, logging when it had
// to.
func (s *Server) clampPosture(agent string, p *vigilpb.Posture) {
	if clampPosture(p) {
		s.log.Warn("posture over its bounds, cut", "agent", agent)
	}
}

func (s *Server) logErr(err error, msg, agent string) {
	if err != nil {
		s.log.Warn(msg, "agent", agent, "err", err)
	}
}
