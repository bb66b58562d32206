//go:build integration

// Package e2e plays Vigil's whole workflow through the real binaries: a
// server, a device agent and a service agent in their own cgroups, driven by
// vigilctl, enforced by the real kernel.
package e2e

import (
	"testing"

	"github.com/vigilsec/vigil/tests/harness"
)

func TestMain(m *testing.M) { harness.Main(m) }
