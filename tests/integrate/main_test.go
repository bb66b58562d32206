//go:build integration

// Package integrate tests Vigil's security integrate interface end to end,
// through the real binaries and the real kernel: a STIX threat-intel feed
// whose hash hit kills an executable at exec, signed results posted to the
// server's webhook, and OCSF exports to a JSON-lines file and to syslog.
// Every agent protects a test cgroup and all traffic stays on loopback.
package integrate

import (
	"testing"

	"github.com/vigilsec/vigil/tests/harness"
)

func TestMain(m *testing.M) { harness.Main(m) }
