// Package scenario holds the two-host scenario that the end-to-end tests and
// the benchmarks share: a device and a service host told apart by loopback
// addresses, and the policy that admits devices at medium or above to the
// service. It owns no resources.
package scenario

import "fmt"

// Addresses of the scenario's two hosts. Both are loopback addresses, so
// every packet stays on the machine.
const (
	DeviceAddr  = "127.0.0.3"
	ServiceAddr = "127.0.0.2"
)

// basePolicy admits devices at medium or above to service crm on agent
// crm-host; a device whose level drops below medium loses it.
const basePolicy = `version: 1
levels: [untrusted, low, medium, high]
defaults:
  level: medium
  traffic: allow
  unknown_peers: deny
services:
  - name: crm
    agents: [crm-host]
    ports: [%d]
    protocol: tcp
    min_level: medium
rules:
  - name: devices-to-crm
    action: allow
    subjects:
      - devices: ["*"]
    services: [crm]
`

// Policy returns the scenario's policy with crm on port, followed by extra
// top-level sections (protections, indicators) when given.
func Policy(port int, extra string) string {
	return fmt.Sprintf(basePolicy, port) + extra
}
