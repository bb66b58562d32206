package decide

import (
	"sort"

	"google.golang.org/protobuf/proto"

	vigilpb "github.com/vigilsec/vigil/gen/vigil/v1"
	"github.com/vigilsec/vigil/policy"
)

// Diff returns the diff that turns table prev into next. Applying it to
// prev gives a table equal to next.
func Diff(prev, next *vigilpb.VerdictTable) *vigilpb.TableDiff {
	d := &vigilpb.TableDiff{
		BaseVersion: prev.Version, Version: next.Version, PolicyVersion: next.PolicyVersion,
		Quarantined: next.Quarantined, FailMode: next.FailMode,
	}
	d.EgressAdded, d.EgressRemoved = diffEntries(prev.Egress, next.Egress, policy.EgressKey)
	d.IngressAdded, d.IngressRemoved = diffEntries(prev.Ingress, next.Ingress, policy.IngressKey)
	d.KillOnExecAdded, d.KillOnExecRemoved = diffStrings(prev.KillOnExec, next.KillOnExec)
	d.CutPeersAdded, d.CutPeersRemoved = diffStrings(prev.CutPeers, next.CutPeers)
	if prev.DefaultEgress != next.DefaultEgress {
		d.DefaultEgress = next.DefaultEgress
	}
	if !samePorts(prev.ProtectedPorts, next.ProtectedPorts) {
		d.ProtectedPorts, d.SetProtectedPorts = next.ProtectedPorts, true
	}
	return d
}

func diffEntries[E any](prev, next []E, key func(E) string) (added, removed []E) {
	prevKeys, nextKeys := keysOf(prev, key), keysOf(next, key)
	had := make(map[string]bool, len(prev))
	for _, k := range prevKeys {
		had[k] = true
	}
	has := make(map[string]bool, len(next))
	for i, k := range nextKeys {
		has[k] = true
		if !had[k] {
			added = append(added, next[i])
		}
	}
	for i, k := range prevKeys {
		if !has[k] {
			removed = append(removed, prev[i])
		}
	}
	return added, removed
}

func keysOf[E any](es []E, key func(E) string) []string {
	out := make([]string, len(es))
	for i, e := range es {
		out[i] = key(e)
	}
	return out
}

func diffStrings(prev, next []string) (added, removed []string) {
	id := func(s string) string { return s }
	added, removed = diffEntries(prev, next, id)
	sort.Strings(added)
	sort.Strings(removed)
	return added, removed
}

func samePorts(a, b []*vigilpb.ProtectedPort) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !proto.Equal(a[i], b[i]) {
			return false
		}
	}
	return true
}
