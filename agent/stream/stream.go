// Package stream is the agent's side of AgentService.Connect: it keeps one
// mutual-TLS stream to the server open, reconnecting with exponential backoff
// and jitter, sends Hello, replays and streams spooled events, and hands
// tables, diffs and instructions to a Handler whose acknowledgements it sends
// back.
//
// The agent's run function owns one Client and calls Run in a goroutine.
// The Client owns its gRPC connection; it reads the spool and acknowledges
// stored events in it, but does not close it.
package stream

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/vigilsec/vigil/agent/spool"
	vigilpb "github.com/vigilsec/vigil/gen/vigil/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"
)

// Handler carries out what the server sends. Its methods are called from
// one goroutine at a time.
type Handler interface {
	// Hello returns the message that opens a stream.
	Hello() *vigilpb.Hello
	// Table applies a full table and returns its acknowledgement.
	Table(t *vigilpb.VerdictTable) *vigilpb.TableAck
	// Diff applies a diff; an error means the diff's base is not the table
	// held, and the client answers with a new Hello.
	Diff(d *vigilpb.TableDiff) (*vigilpb.TableAck, error)
	// Instruction executes an instruction received at the given time.
	Instruction(ins *vigilpb.Instruction, received time.Time) *vigilpb.InstructionAck
	// Online reports whether a stream to the server is up.
	Online(up bool)
}

// Config configures a Client.
type Config struct {
	Addr    string      // server address, host:port
	TLS     *tls.Config // mutual-TLS client configuration
	Spool   *spool.Spool
	Handler Handler
	Logger  *slog.Logger

	BatchEvents int           // events per EventBatch; 0 means 256
	FlushEvery  time.Duration // how often spooled events are synced and sent; 0 means 25 ms
	MaxInFlight uint64        // events sent but not acknowledged; 0 means 20000
	BackoffMin  time.Duration // first reconnect delay; 0 means 250 ms
	BackoffMax  time.Duration // longest reconnect delay; 0 means 30 s
}

// State is the stream's state, for metrics.
type State int

// States of the stream.
const (
	StateConnecting State = iota
	StateOnline
	StateBackoff
)

// Client keeps the agent's stream to the server.
type Client struct {
	cfg    Config
	outbox chan *vigilpb.AgentMessage

	mu    sync.Mutex
	state State // guarded by mu
}

// New returns a Client; Run starts it.
func New(cfg Config) *Client {
	if cfg.BatchEvents == 0 {
		cfg.BatchEvents = 256
	}
	if cfg.FlushEvery == 0 {
		cfg.FlushEvery = 25 * time.Millisecond
	}
	if cfg.MaxInFlight == 0 {
		cfg.MaxInFlight = 20000
	}
	if cfg.BackoffMin == 0 {
		cfg.BackoffMin = 250 * time.Millisecond
	}
	if cfg.BackoffMax == 0 {
		// Short enough that a healed partition is noticed within seconds;
		// full jitter spreads a fleet's reconnects over the same window.
		cfg.BackoffMax = 5 * time.Second
	}
	return &Client{cfg: cfg, outbox: make(chan *vigilpb.AgentMessage, 64)}
}

// State returns the stream's current state. It is safe for concurrent use.
func (c *Client) State() State {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.state
}

func (c *Client) setState(s State) {
	c.mu.Lock()
	c.state = s
	c.mu.Unlock()
}

// Send queues a message (posture, counters) for the current stream. It never
// blocks: when no stream is up or the queue is full, the message is dropped,
// since the next Hello or periodic report carries the same state. It is safe
// for concurrent use.
func (c *Client) Send(m *vigilpb.AgentMessage) bool {
	if c.State() != StateOnline {
		return false
	}
	select {
	case c.outbox <- m:
		return true
	default:
		return false
	}
}

// streamKeepalive pings the server on a quiet connection, so a stream
// whose path died (a partition) is noticed within seconds and replaced
// instead of waiting for TCP to give up or a retransmission to get through.
// Time stays above the server's minimum ping interval.
var streamKeepalive = keepalive.ClientParameters{
	Time: 10 * time.Second, Timeout: 5 * time.Second, PermitWithoutStream: true,
}

// maxMessageBytes is the largest server message accepted: the server's
// bound on every message it sends (must match server/api.MaxMessageBytes),
// so a table the server sends, however many peers it names, is never
// refused here.
const maxMessageBytes = 16 << 20

// Run keeps a stream open until ctx ends, reconnecting after every failure
// with exponential backoff and full jitter.
func (c *Client) Run(ctx context.Context) error {
	creds := grpc.WithTransportCredentials(credentials.NewTLS(c.cfg.TLS))
	conn, err := grpc.NewClient(c.cfg.Addr, creds, grpc.WithKeepaliveParams(streamKeepalive),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(maxMessageBytes)))
	if err != nil {
		return fmt.Errorf("dial %s: %w", c.cfg.Addr, err)
	}
	defer conn.Close()

	delay := c.cfg.BackoffMin
	for ctx.Err() == nil {
		c.setState(StateConnecting)
		began := time.Now()
		err := c.session(ctx, vigilpb.NewAgentServiceClient(conn))
		c.cfg.Handler.Online(false)
		if ctx.Err() != nil {
			break
		}

		if time.Since(began) > c.cfg.BackoffMax {
			delay = c.cfg.BackoffMin
		}
		wait := rand.N(delay) + time.Millisecond
		c.cfg.Logger.Warn("stream down", "err", err, "retry_in", wait)
		c.setState(StateBackoff)
		select {
		case <-ctx.Done():
		case <-time.After(wait):
		}
		delay = min(2*delay, c.cfg.BackoffMax)
	}
	return nil
}

// errReauthenticate ends a session so the client reconnects.
var errReauthenticate = errors.New("server asked to re-authenticate")

// session runs one stream: Hello, then a receive goroutine and the send
// loop, until either fails.
func (c *Client) session(ctx context.Context, api vigilpb.AgentServiceClient) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)

	st, err := api.Connect(ctx)
	if err != nil {
		return fmt.Errorf("open stream: %w", err)
	}
	if err := st.Send(hello(c.cfg.Handler.Hello())); err != nil {
		return fmt.Errorf("send hello: %w", err)
	}

	replies := make(chan *vigilpb.AgentMessage, 64)
	received := make(chan struct{})
	go func() {
		defer close(received)
		cancel(c.receive(ctx, st, replies))
	}()
	cancel(c.send(ctx, st, replies))
	<-received
	return context.Cause(ctx)
}

// receive handles server messages and queues the replies for the sender.
func (c *Client) receive(ctx context.Context, st vigilpb.AgentService_ConnectClient,
	replies chan<- *vigilpb.AgentMessage) error {
	first := true
	for {
		msg, err := st.Recv()
		if err != nil {
			return fmt.Errorf("receive: %w", err)
		}
		if first {
			first = false
			c.setState(StateOnline)
			c.cfg.Handler.Online(true)
			c.cfg.Logger.Info("stream online", "peer", c.cfg.Addr)
		}

		reply, err := c.handle(msg)
		if reply != nil {
			select {
			case replies <- reply:
			case <-ctx.Done():
				return context.Cause(ctx)
			}
		}
		if err != nil {
			return err
		}
	}
}

// handle dispatches one server message and returns the reply, if any.
func (c *Client) handle(msg *vigilpb.ServerMessage) (*vigilpb.AgentMessage, error) {
	switch b := msg.Body.(type) {
	case *vigilpb.ServerMessage_Table:
		return tableAck(c.cfg.Handler.Table(b.Table)), nil
	case *vigilpb.ServerMessage_Diff:
		ack, err := c.cfg.Handler.Diff(b.Diff)
		if err != nil {
			c.cfg.Logger.Info("diff base is not ours, asking for a full table", "err", err)
			return hello(c.cfg.Handler.Hello()), nil
		}
		return tableAck(ack), nil
	case *vigilpb.ServerMessage_Instruction:
		ack := c.cfg.Handler.Instruction(b.Instruction, time.Now())
		reply := &vigilpb.AgentMessage{Body: &vigilpb.AgentMessage_Ack{Ack: ack}}
		if b.Instruction.Kind == vigilpb.InstructionKind_INSTRUCTION_KIND_REAUTHENTICATE {
			return reply, errReauthenticate
		}
		return reply, nil
	case *vigilpb.ServerMessage_EventsAck:
		return nil, c.cfg.Spool.Ack(b.EventsAck.Seq)
	}
	return nil, nil
}

// send writes replies, queued messages and spooled events to the stream.
// Everything unacknowledged in the spool is sent again on a new stream.
func (c *Client) send(ctx context.Context, st vigilpb.AgentService_ConnectClient,
	replies <-chan *vigilpb.AgentMessage) error {
	tick := time.NewTicker(c.cfg.FlushEvery)
	defer tick.Stop()

	sent := c.cfg.Spool.Stats().Acked
	for {
		var msg *vigilpb.AgentMessage
		select {
		case <-ctx.Done():
			return context.Cause(ctx)
		case msg = <-replies:
		case msg = <-c.outbox:
		case <-tick.C:
			var err error
			if sent, err = c.sendEvents(st, sent); err != nil {
				return err
			}
			continue
		}
		if err := st.Send(msg); err != nil {
			return fmt.Errorf("send: %w", err)
		}
	}
}

// sendEvents syncs the spool and sends the events after sent, in batches,
// while fewer than MaxInFlight are unacknowledged. It returns the last
// sequence sent.
func (c *Client) sendEvents(st vigilpb.AgentService_ConnectClient, sent uint64) (uint64, error) {
	if err := c.cfg.Spool.Sync(); err != nil {
		return sent, err
	}
	for {
		// The server may acknowledge past what this stream sent (it stored
		// them from an earlier one); resume after its acknowledgement.
		acked := c.cfg.Spool.Stats().Acked
		sent = max(sent, acked)
		if sent-acked >= c.cfg.MaxInFlight {
			return sent, nil
		}
		evs, err := c.cfg.Spool.Read(sent, c.cfg.BatchEvents)
		if err != nil || len(evs) == 0 {
			return sent, err
		}
		batch := eventBatch(sent, evs)
		msg := &vigilpb.AgentMessage{Body: &vigilpb.AgentMessage_Events{Events: batch}}
		if err := st.Send(msg); err != nil {
			return sent, fmt.Errorf("send events: %w", err)
		}
		sent = batch.Events[len(batch.Events)-1].Seq
	}
}

// eventBatch builds the batch of evs, read after sent. The spool keeps
// every sequence number it did not drop, so one missing between sent and
// the first event was dropped (the spool overflowed or a record was
// corrupt): the batch says so, and the server stops waiting for it. The
// batch ends before a gap inside evs, which the next batch reports.
func eventBatch(sent uint64, evs []*vigilpb.Event) *vigilpb.EventBatch {
	b := &vigilpb.EventBatch{Events: evs}
	if first := evs[0].Seq; first > sent+1 {
		b.DroppedThrough = first - 1
	}
	for i := 1; i < len(evs); i++ {
		if evs[i].Seq != evs[i-1].Seq+1 {
			b.Events = evs[:i]
			break
		}
	}
	return b
}

func hello(h *vigilpb.Hello) *vigilpb.AgentMessage {
	return &vigilpb.AgentMessage{Body: &vigilpb.AgentMessage_Hello{Hello: h}}
}

func tableAck(a *vigilpb.TableAck) *vigilpb.AgentMessage {
	return &vigilpb.AgentMessage{Body: &vigilpb.AgentMessage_TableAck{TableAck: a}}
}
