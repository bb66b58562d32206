package api

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	vigilpb "github.com/vigilsec/vigil/gen/vigil/v1"
	"github.com/vigilsec/vigil/server/pki"
	"github.com/vigilsec/vigil/server/registry"
	"github.com/vigilsec/vigil/server/store"
)

// Enrollment tokens read vgl1.<id>.<secret>.<ca-sha256-hex>: the id names
// the stored token, only the SHA-256 of the secret is stored, and the CA
// fingerprint lets an agent pin the server's CA before it trusts it.
const (
	tokenPrefix    = "vgl1"
	tokenIDBytes   = 8
	secretBytes    = 16
	maxTokenTTL    = 30 * 24 * time.Hour
	fingerprintHex = 64
)

// token is a parsed enrollment token.
type token struct {
	id, secret, caFingerprint string
}

func parseToken(s string) (token, error) {
	parts := strings.Split(s, ".")
	if len(parts) != 4 || parts[0] != tokenPrefix {
		return token{}, errors.New("token must read vgl1.<id>.<secret>.<ca-sha256>")
	}
	t := token{id: parts[1], secret: parts[2], caFingerprint: parts[3]}
	if !isHex(t.id, 2*tokenIDBytes) || !isHex(t.secret, 2*secretBytes) || !isHex(t.caFingerprint, fingerprintHex) {
		return token{}, errors.New("token fields must be lowercase hex of the right length")
	}
	return t, nil
}

func isHex(s string, n int) bool {
	if len(s) != n {
		return false
	}
	_, err := hex.DecodeString(s)
	return err == nil && strings.ToLower(s) == s
}

func secretHash(secret string) []byte {
	sum := sha256.Sum256([]byte(secret))
	return sum[:]
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// CreateToken makes a one-time enrollment token.
func (s *Server) CreateToken(ctx context.Context,
	req *vigilpb.CreateTokenRequest) (*vigilpb.CreateTokenResponse, error) {
	ttl := s.cfg.TokenTTL
	if req.GetTtlSeconds() > 0 {
		ttl = time.Duration(req.GetTtlSeconds()) * time.Second
	}
	if ttl > maxTokenTTL {
		return nil, status.Errorf(codes.InvalidArgument, "ttl_seconds: at most %d", int(maxTokenTTL.Seconds()))
	}

	t := token{id: randomHex(tokenIDBytes), secret: randomHex(secretBytes),
		caFingerprint: s.cfg.Authority.Fingerprint()}
	now := time.Now()
	rec := store.TokenRecord{SecretHash: secretHash(t.secret), Created: now, Expires: now.Add(ttl),
		CreatedBy: identityFrom(ctx).String()}
	if err := s.cfg.Store.PutToken(t.id, rec); err != nil {
		return nil, s.internal("store token", err)
	}
	text := strings.Join([]string{tokenPrefix, t.id, t.secret, t.caFingerprint}, ".")
	return &vigilpb.CreateTokenResponse{Token: text, ExpiresUnix: rec.Expires.Unix()}, nil
}

// Enroll consumes a token and signs the agent's certificate request. Failed
// attempts are charged to the peer address: after a burst of them a peer may
// try about once every five seconds, which keeps guessing tokens hopeless.
func (s *Server) Enroll(ctx context.Context, req *vigilpb.EnrollRequest) (*vigilpb.EnrollResponse, error) {
	host := peerHost(ctx)
	if s.enrollRL.blocked(host) {
		return nil, status.Error(codes.ResourceExhausted, "too many failed enrollment attempts; wait and retry")
	}
	resp, err := s.enroll(ctx, req)
	if err != nil {
		s.enrollRL.charge(host)
	}
	return resp, err
}

func (s *Server) enroll(ctx context.Context, req *vigilpb.EnrollRequest) (*vigilpb.EnrollResponse, error) {
	t, err := parseToken(req.GetToken())
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, "token: "+err.Error())
	}
	if t.caFingerprint != s.cfg.Authority.Fingerprint() {
		return nil, status.Error(codes.FailedPrecondition, "token was issued by another server's CA")
	}
	if err := pki.ValidateName(req.GetName()); err != nil {
		return nil, status.Error(codes.InvalidArgument, "name: "+err.Error())
	}

	if err := s.cfg.Store.ConsumeToken(t.id, secretHash(t.secret), req.GetName(), time.Now()); err != nil {
		return nil, s.tokenErr(err)
	}
	certPEM, serial, err := s.cfg.Authority.SignAgent(req.GetName(), req.GetCsrDer())
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, "csr_der: "+err.Error())
	}
	if err := s.cfg.Registry.Enroll(req.GetName(), serial, t.id); err != nil {
		if errors.Is(err, registry.ErrNameTaken) {
			return nil, status.Errorf(codes.AlreadyExists,
				"agent name %q is enrolled; revoke it before enrolling the name again", req.GetName())
		}
		return nil, s.internal("enroll agent", err)
	}

	s.log.Info("agent enrolled", "agent", req.GetName(), "peer", peerHost(ctx))
	return &vigilpb.EnrollResponse{CertificatePem: certPEM, CaPem: s.cfg.Authority.CertPEM()}, nil
}

func (s *Server) tokenErr(err error) error {
	switch {
	case errors.Is(err, store.ErrTokenUnknown):
		return status.Error(codes.Unauthenticated, "enrollment token not recognized")
	case errors.Is(err, store.ErrTokenUsed):
		return status.Error(codes.FailedPrecondition, "enrollment token already used")
	case errors.Is(err, store.ErrTokenExpired):
		return status.Error(codes.FailedPrecondition, "enrollment token expired")
	}
	return s.internal("consume token", fmt.Errorf("consume token: %w", err))
}

func peerHost(ctx context.Context) string {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return ""
	}
	host, _, err := net.SplitHostPort(p.Addr.String())
	if err != nil {
		return p.Addr.String()
	}
	return host
}
