package policy

import (
	"fmt"
	"testing"

	vigilpb "github.com/vigilsec/vigil/gen/vigil/v1"
)

// TestDestinationProtocolDefault checks that a destination without a
// protocol takes the stricter reading of its rule's action.
func TestDestinationProtocolDefault(t *testing.T) {
	const src = `version: 1
levels: [low, high]
defaults: {level: high, traffic: allow, unknown_peers: deny}
rules:
  - name: rule
    action: %s
    subjects: [{devices: ["*"]}]
    destinations: [{cidrs: [192.0.2.0/24], ports: ["53"]%s}]
`
	tests := []struct {
		name, action, protocol string
		want                   vigilpb.Protocol
	}{
		{"deny refuses every transport", "deny", "", vigilpb.Protocol_PROTOCOL_ANY},
		{"allow admits tcp only", "allow", "", vigilpb.Protocol_PROTOCOL_TCP},
		{"written protocol stands", "deny", ", protocol: udp", vigilpb.Protocol_PROTOCOL_UDP},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, errs := Parse("p.yaml", []byte(fmt.Sprintf(src, tt.action, tt.protocol)))
			if len(errs) > 0 {
				t.Fatal(errs)
			}
			if got := p.Rules[0].Destinations[0].Protocol; got != tt.want {
				t.Errorf("protocol = %v, want %v", got, tt.want)
			}
		})
	}
}
