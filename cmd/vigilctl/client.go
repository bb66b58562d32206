package main

import (
	"context"
	"time"

	"github.com/urfave/cli/v2"
	"google.golang.org/grpc"

	vigilpb "github.com/vigilsec/vigil/gen/vigil/v1"
	"github.com/vigilsec/vigil/internal/ctlclient"
)

// callTimeout bounds every unary call, including instructions that wait for
// the agent's acknowledgement.
const callTimeout = 30 * time.Second

// session is one command's connection to the server.
type session struct {
	admin  vigilpb.AdminServiceClient
	conn   *grpc.ClientConn
	server string
}

// connect dials the server named by the global flags. The caller closes the
// session.
func connect(c *cli.Context) (*session, error) {
	dir, err := ctlclient.CredentialsDir(c.String("credentials"))
	if err != nil {
		return nil, err
	}
	server := c.String("server")
	conn, err := ctlclient.Dial(server, dir)
	if err != nil {
		return nil, err
	}
	return &session{admin: vigilpb.NewAdminServiceClient(conn), conn: conn, server: server}, nil
}

// Close closes the connection.
func (s *session) Close() { s.conn.Close() }

// fail wraps an error returned by an AdminService call.
func (s *session) fail(err error) error { return rpcError{err: err, server: s.server} }

// unary returns the context for one unary call.
func unary(c *cli.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(c.Context, callTimeout)
}

// call dials the server, makes one unary AdminService call with req and
// closes the connection, mapping a failed call to the command's error. rpc
// is a method expression such as vigilpb.AdminServiceClient.ListAgents.
func call[Req, Resp any](c *cli.Context,
	rpc func(vigilpb.AdminServiceClient, context.Context, Req, ...grpc.CallOption) (Resp, error),
	req Req) (Resp, error) {
	var zero Resp
	s, err := connect(c)
	if err != nil {
		return zero, err
	}
	defer s.Close()

	ctx, cancel := unary(c)
	defer cancel()
	resp, err := rpc(s.admin, ctx, req)
	if err != nil {
		return zero, s.fail(err)
	}
	return resp, nil
}
