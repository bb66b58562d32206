package agent

import (
	"errors"
	"fmt"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func TestRefusedEnrollmentIsFinal(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want bool
	}{
		{"spent token", fmt.Errorf("enroll: %w", status.Error(codes.FailedPrecondition, "token already used")), true},
		{"unknown token", fmt.Errorf("enroll: %w", status.Error(codes.Unauthenticated, "unknown token")), true},
		{"taken name", fmt.Errorf("enroll: %w", status.Error(codes.AlreadyExists, "name taken")), true},
		{"server down", fmt.Errorf("enroll: %w", status.Error(codes.Unavailable, "connection refused")), false},
		{"rate limited", fmt.Errorf("enroll: %w", status.Error(codes.ResourceExhausted, "slow down")), false},
		{"plain error", errors.New("dial: timeout"), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := refused(tt.err); got != tt.want {
				t.Errorf("refused(%v) = %v, want %v", tt.err, got, tt.want)
			}
		})
	}
}
