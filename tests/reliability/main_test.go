//go:build integration

// Package reliability proves that Vigil keeps enforcing and loses nothing
// under faults, load and hostile input: agent and server crashes, policy
// churn, a network partition, ring-buffer floods, hostile messages and
// spoofed process identities. Every test runs the real binaries (through
// tests/harness) against the real kernel, scoped to cgroups and network
// namespaces it creates and removes itself; traffic goes only to loopback
// or to addresses inside those namespaces.
package reliability

import (
	"testing"

	"github.com/vigilsec/vigil/tests/harness"
)

func TestMain(m *testing.M) { harness.Main(m) }
