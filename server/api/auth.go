package api

import (
	"context"
	"crypto/tls"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	vigilpb "github.com/vigilsec/vigil/gen/vigil/v1"
	"github.com/vigilsec/vigil/server/pki"
)

// caller is who may call a method.
type caller int

const (
	callerAnyone caller = iota // no client certificate needed (enrollment)
	callerAgent
	callerViewer
	callerOperator
	callerAdmin
)

// methodCallers says who may call each method. A method missing here is
// refused: new RPCs are closed until someone decides who may call them.
var methodCallers = map[string]caller{
	vigilpb.EnrollmentService_Enroll_FullMethodName:    callerAnyone,
	vigilpb.AgentService_Connect_FullMethodName:        callerAgent,
	vigilpb.AdminService_ListAgents_FullMethodName:     callerViewer,
	vigilpb.AdminService_ListEntities_FullMethodName:   callerViewer,
	vigilpb.AdminService_ValidatePolicy_FullMethodName: callerViewer,
	vigilpb.AdminService_GetPolicy_FullMethodName:      callerViewer,
	vigilpb.AdminService_PolicyHistory_FullMethodName:  callerViewer,
	vigilpb.AdminService_QueryEvents_FullMethodName:    callerViewer,
	vigilpb.AdminService_FollowEvents_FullMethodName:   callerViewer,
	vigilpb.AdminService_Explain_FullMethodName:        callerViewer,
	vigilpb.AdminService_CreateToken_FullMethodName:    callerOperator,
	vigilpb.AdminService_Kill_FullMethodName:           callerOperator,
	vigilpb.AdminService_Cut_FullMethodName:            callerOperator,
	vigilpb.AdminService_Restore_FullMethodName:        callerOperator,
	vigilpb.AdminService_Report_FullMethodName:         callerOperator,
	vigilpb.AdminService_ApplyPolicy_FullMethodName:    callerAdmin,
	vigilpb.AdminService_RevokeAgent_FullMethodName:    callerAdmin,
}

var callerRoles = map[caller]pki.Role{
	callerViewer: pki.RoleViewer, callerOperator: pki.RoleOperator, callerAdmin: pki.RoleAdmin,
}

type identityKey struct{}

// identityFrom returns the verified identity the interceptors stored.
func identityFrom(ctx context.Context) pki.Identity {
	id, _ := ctx.Value(identityKey{}).(pki.Identity)
	return id
}

// authorize checks the caller of method against methodCallers and returns
// the context carrying its identity.
func authorize(ctx context.Context, method string) (context.Context, error) {
	need, ok := methodCallers[method]
	if !ok {
		return nil, status.Errorf(codes.PermissionDenied, "method %s is not open to any caller", method)
	}
	if need == callerAnyone {
		return ctx, nil
	}
	id, err := peerIdentity(ctx)
	if err != nil {
		return nil, err
	}

	switch {
	case need == callerAgent && !id.Agent:
		return nil, status.Error(codes.PermissionDenied, "only agent certificates may call "+method)
	case need != callerAgent && id.Agent:
		return nil, status.Error(codes.PermissionDenied, "agent certificates may not call "+method)
	case need != callerAgent && id.Role < callerRoles[need]:
		return nil, status.Errorf(codes.PermissionDenied, "role %s may not call %s (needs %s)",
			id.Role, shortMethod(method), callerRoles[need])
	}
	return context.WithValue(ctx, identityKey{}, id), nil
}

// peerIdentity reads the identity from the client certificate the TLS
// handshake verified against the CA.
func peerIdentity(ctx context.Context) (pki.Identity, error) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return pki.Identity{}, status.Error(codes.Unauthenticated, "no peer")
	}
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || !isVerified(info.State) {
		return pki.Identity{}, status.Error(codes.Unauthenticated,
			"a client certificate signed by the server's CA is required")
	}
	id, err := pki.Identify(info.State.VerifiedChains[0][0])
	if err != nil {
		return pki.Identity{}, status.Error(codes.Unauthenticated, "client certificate carries no vigil identity")
	}
	return id, nil
}

func isVerified(st tls.ConnectionState) bool {
	return len(st.VerifiedChains) > 0 && len(st.VerifiedChains[0]) > 0
}

func shortMethod(full string) string {
	return full[strings.LastIndex(full, "/")+1:]
}

func (s *Server) unaryInterceptor(ctx context.Context, req any, info *grpc.UnaryServerInfo,
	handler grpc.UnaryHandler) (any, error) {
	actx, err := authorize(ctx, info.FullMethod)
	if err != nil {
		s.auditRefusal(ctx, info.FullMethod, req, err)
		return nil, err
	}
	resp, err := handler(actx, req)
	if isAdminMethod(info.FullMethod) {
		s.audit(actx, info.FullMethod, req, err)
	}
	return resp, err
}

func isAdminMethod(method string) bool {
	return strings.HasPrefix(method, "/"+vigilpb.AdminService_ServiceDesc.ServiceName+"/")
}

// auditRefusal records a refused admin call under whatever identity the
// certificate carries, so denied attempts are on the record too.
func (s *Server) auditRefusal(ctx context.Context, method string, req any, err error) {
	if !isAdminMethod(method) {
		return
	}
	if id, idErr := peerIdentity(ctx); idErr == nil {
		ctx = context.WithValue(ctx, identityKey{}, id)
	}
	s.audit(ctx, method, req, err)
}

func (s *Server) streamInterceptor(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo,
	handler grpc.StreamHandler) error {
	ctx, err := authorize(ss.Context(), info.FullMethod)
	if err != nil {
		s.auditRefusal(ss.Context(), info.FullMethod, nil, err)
		return err
	}
	return handler(srv, &identityStream{ServerStream: ss, ctx: ctx})
}

// identityStream is a server stream whose context carries the identity.
type identityStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s *identityStream) Context() context.Context { return s.ctx }
