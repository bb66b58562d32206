package ctlclient

import (
	"fmt"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
)

// DefaultServer is the server address used when none is given.
const DefaultServer = "127.0.0.1:7443"

// maxReplyBytes is the largest reply accepted: the server's own bound on
// every message, so a query the server answers is never refused here.
const maxReplyBytes = 16 << 20

// Dial returns a connection to the server at addr authenticated with the
// admin credentials in dir. The connection is made lazily: an unreachable
// server shows up as an Unavailable error on the first call. The caller
// closes the connection.
func Dial(addr, dir string) (*grpc.ClientConn, error) {
	cfg, err := LoadTLS(dir)
	if err != nil {
		return nil, err
	}
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(cfg)),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(maxReplyBytes)))
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", addr, err)
	}
	return conn, nil
}
