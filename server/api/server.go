// Package api is the server's gRPC transport: the enrollment, agent stream
// and admin services of protocol v1 over mutual TLS. It authenticates every
// call from the client certificate, authorizes it by identity and role,
// stores what agents send (server/store), keeps the registry of online
// agents (server/registry), hands decisions to the Engine, and carries the
// engine's tables and instructions back to agents through the Dispatcher.
// cmd/vigil-server builds it; it owns the gRPC server and the agents'
// streams, not the store, which the caller closes after Shutdown.
package api

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	vigilpb "github.com/vigilsec/vigil/gen/vigil/v1"
	"github.com/vigilsec/vigil/server/metrics"
	"github.com/vigilsec/vigil/server/pki"
	"github.com/vigilsec/vigil/server/registry"
	"github.com/vigilsec/vigil/server/store"
)

// Transport limits.
const (
	// MaxMessageBytes bounds every message in both directions.
	MaxMessageBytes = 16 << 20
	// maxBatchEvents bounds the events in one EventBatch.
	maxBatchEvents = 10000
	// sendQueueLen bounds the messages waiting for one agent's stream.
	sendQueueLen = 1024
	// agentMsgRate and agentMsgBurst throttle one agent's messages (per
	// second); an agent over the rate is slowed, not dropped.
	agentMsgRate, agentMsgBurst = 500, 2000
	// enrollBurst is how many failed enrollments a peer may make at once.
	enrollBurst = 10
	// followBuffer bounds the events waiting for one FollowEvents caller.
	followBuffer = 4096
)

// Config is what a Server is built from. Store, Registry, Authority, Engine,
// Dispatcher and Logger are required.
type Config struct {
	// Store is the server's database; the caller closes it after Shutdown.
	Store *store.Store
	// Registry tracks enrolled agents.
	Registry *registry.Registry
	// Authority signs agents' certificates and verifies clients.
	Authority *pki.Authority
	// Engine makes the decisions.
	Engine Engine
	// Dispatcher is the Sink the Engine was given.
	Dispatcher *Dispatcher
	// Metrics is updated as the server works; nil disables it.
	Metrics *metrics.Metrics
	// Logger receives lifecycle and per-stream logs.
	Logger *slog.Logger
	// Hosts are extra names or addresses for the server certificate.
	Hosts []string
	// TokenTTL is the default enrollment token lifetime (default 1h).
	TokenTTL time.Duration
	// AckTimeout bounds how long Kill, Cut and Restore wait for the agent's
	// acknowledgement (default 5s, or the request's deadline if sooner).
	AckTimeout time.Duration
}

// Server serves protocol v1. Serve may be called once; Shutdown stops it.
type Server struct {
	vigilpb.UnimplementedEnrollmentServiceServer
	vigilpb.UnimplementedAgentServiceServer
	vigilpb.UnimplementedAdminServiceServer

	cfg      Config
	log      *slog.Logger
	grpc     *grpc.Server
	enrollRL *keyedLimiter
	quit     chan struct{}
	quitOnce sync.Once
	// refused counts agent events refused for their kind; it is safe for
	// concurrent use.
	refused *prometheus.CounterVec
	// receivers counts the agent streams' receive goroutines, which
	// Shutdown waits for so no message is handled after it returns.
	receivers sync.WaitGroup
}

// New builds a server and its TLS credentials (issuing the server
// certificate on first start).
func New(cfg Config) (*Server, error) {
	if cfg.TokenTTL == 0 {
		cfg.TokenTTL = time.Hour
	}
	if cfg.AckTimeout == 0 {
		cfg.AckTimeout = 5 * time.Second
	}
	tlsCfg, err := serverTLS(cfg.Authority, cfg.Hosts)
	if err != nil {
		return nil, err
	}

	s := &Server{cfg: cfg, log: cfg.Logger, quit: make(chan struct{}),
		enrollRL: newKeyedLimiter(0.2, enrollBurst, 10000), refused: newRefusedCounter(cfg.Metrics)}
	s.grpc = grpc.NewServer(
		grpc.Creds(credentials.NewTLS(tlsCfg)),
		grpc.MaxRecvMsgSize(MaxMessageBytes),
		grpc.MaxSendMsgSize(MaxMessageBytes),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 30 * time.Second, Timeout: 10 * time.Second}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{
			MinTime: 5 * time.Second, PermitWithoutStream: true}),
		grpc.UnaryInterceptor(s.unaryInterceptor),
		grpc.StreamInterceptor(s.streamInterceptor),
	)
	vigilpb.RegisterEnrollmentServiceServer(s.grpc, s)
	vigilpb.RegisterAgentServiceServer(s.grpc, s)
	vigilpb.RegisterAdminServiceServer(s.grpc, s)
	return s, nil
}

func serverTLS(ca *pki.Authority, hosts []string) (*tls.Config, error) {
	certPEM, keyPEM, err := ca.ServerCertificate(hosts)
	if err != nil {
		return nil, fmt.Errorf("server certificate: %w", err)
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("server certificate: %w", err)
	}
	// The CA goes out with the leaf so an enrolling agent, which trusts
	// nothing yet, can match it against the fingerprint in its token.
	pair.Certificate = append(pair.Certificate, ca.CertDER())
	return &tls.Config{
		Certificates: []tls.Certificate{pair},
		ClientCAs:    ca.Pool(),
		// Enroll is the one call without a client certificate; the
		// interceptors require a verified one for everything else.
		ClientAuth: tls.VerifyClientCertIfGiven,
		MinVersion: tls.VersionTLS13,
	}, nil
}

// Serve accepts connections on lis until Shutdown.
func (s *Server) Serve(lis net.Listener) error {
	if err := s.grpc.Serve(lis); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
		return fmt.Errorf("serve grpc: %w", err)
	}
	return nil
}

// Shutdown stops accepting connections, ends every agent and follower stream
// (agents reconnect to the next server), waits for unary calls in flight
// until ctx ends, then closes every connection. When it returns no handler
// runs any more and the caller may close the store.
func (s *Server) Shutdown(ctx context.Context) {
	s.quitOnce.Do(func() { close(s.quit) })
	stopped := make(chan struct{})
	go func() {
		s.grpc.GracefulStop()
		close(stopped)
	}()
	select {
	case <-stopped:
	case <-ctx.Done():
		s.grpc.Stop()
		<-stopped
	}
	s.receivers.Wait()
}

var errShutdown = status.Error(codes.Unavailable, "server shutting down")

// internal logs err and returns an Internal status that does not leak it.
func (s *Server) internal(step string, err error) error {
	s.log.Error(step, "err", err)
	return status.Errorf(codes.Internal, "%s: internal error", step)
}

// engineErr passes status errors from the engine through and hides others.
func (s *Server) engineErr(step string, err error) error {
	if st, ok := status.FromError(err); ok && st.Code() != codes.Unknown {
		return err
	}
	return s.internal(step, err)
}

// audit writes an admin call to the audit log. A failure to write it is
// logged; the call's own result stands.
func (s *Server) audit(ctx context.Context, method string, req any, callErr error) {
	actor := "unauthenticated"
	if id := identityFrom(ctx); id.Name != "" {
		actor = id.String()
	}
	rec := store.AuditRecord{
		Time:   time.Now(),
		Actor:  actor,
		Action: shortMethod(method),
		Result: status.Code(callErr).String(),
	}
	if m, ok := req.(proto.Message); ok {
		rec.Target = auditTarget(m)
		rec.Detail = auditDetail(m)
	}
	if err := s.cfg.Store.AppendAudit(rec); err != nil {
		s.log.Error("append audit record", "err", err)
	}
}

// auditTarget returns the request's agent, name or entity field.
func auditTarget(m proto.Message) string {
	fields := m.ProtoReflect().Descriptor().Fields()
	for _, name := range []protoreflect.Name{"agent", "name", "entity"} {
		if fd := fields.ByName(name); fd != nil && fd.Kind() == protoreflect.StringKind {
			return m.ProtoReflect().Get(fd).String()
		}
	}
	return ""
}

// auditDetail renders the request compactly, cut to 512 bytes.
func auditDetail(m proto.Message) string {
	text := strings.Join(strings.Fields(prototext.MarshalOptions{}.Format(m)), " ")
	if len(text) > 512 {
		text = text[:512] + "…"
	}
	return text
}
