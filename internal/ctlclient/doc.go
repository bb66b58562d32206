// Package ctlclient connects operator tools such as vigilctl to the server's
// AdminService. It finds and loads the admin credentials (ca.crt, admin.crt,
// admin.key), dials with mutual TLS that verifies the server's name against
// the Vigil CA, and turns gRPC status errors into short messages an operator
// can act on. It owns no resources beyond the *grpc.ClientConn it returns,
// which the caller closes.
package ctlclient
