package ctlclient

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Failure is an RPC error as an operator reads it.
type Failure struct {
	// Message is one short lowercase line, e.g.
	// "permission denied: role viewer cannot kill".
	Message string
	// Rejected is true when the server answered and refused the request;
	// false when it could not be reached or broke.
	Rejected bool
}

// codeNames are the phrases that open a message for each status code.
var codeNames = map[codes.Code]string{
	codes.Canceled:           "canceled",
	codes.InvalidArgument:    "invalid request",
	codes.DeadlineExceeded:   "timed out",
	codes.NotFound:           "not found",
	codes.AlreadyExists:      "already exists",
	codes.PermissionDenied:   "permission denied",
	codes.ResourceExhausted:  "resource exhausted",
	codes.FailedPrecondition: "refused",
	codes.Aborted:            "aborted",
	codes.OutOfRange:         "out of range",
	codes.Unimplemented:      "not supported by this server",
	codes.Internal:           "server error",
	codes.Unavailable:        "unreachable",
	codes.DataLoss:           "data loss",
	codes.Unauthenticated:    "not authenticated",
}

// rejections are the codes with which a reachable server refuses a request.
var rejections = map[codes.Code]bool{
	codes.InvalidArgument:    true,
	codes.NotFound:           true,
	codes.AlreadyExists:      true,
	codes.PermissionDenied:   true,
	codes.FailedPrecondition: true,
	codes.OutOfRange:         true,
	codes.Unauthenticated:    true,
	codes.ResourceExhausted:  true,
	codes.Aborted:            true,
}

// handshakeFailed is how grpc-go reports a TLS failure inside an
// Unavailable status.
const handshakeFailed = "authentication handshake failed"

// Describe turns an error from an AdminService call to server into a
// Failure. Errors that carry no gRPC status are reported as they are.
func Describe(err error, server string) Failure {
	if errors.Is(err, context.DeadlineExceeded) {
		return Failure{Message: fmt.Sprintf("timed out waiting for %s", server)}
	}
	st, ok := status.FromError(err)
	if !ok {
		return Failure{Message: err.Error()}
	}

	name, known := codeNames[st.Code()]
	if !known {
		name = "server error"
	}
	text := st.Message()
	if st.Code() == codes.Unavailable {
		name = "server " + server + " unreachable"
		if _, detail, ok := strings.Cut(text, handshakeFailed); ok {
			name, text = "tls handshake with "+server+" failed", strings.Trim(detail, ` :"`)
		}
	}
	if text != "" {
		name += ": " + text
	}
	return Failure{Message: name, Rejected: rejections[st.Code()]}
}
