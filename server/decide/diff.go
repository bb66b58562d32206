package decide

import (
	"sort"

	"google.golang.org/protobuf/proto"

	vigilpb "github.com/vigilsec/vigil/gen/vigil/v1"
	"github.com/vigilsec/vigil/policy"
)

// Diff returns the diff that turns table prev into next. Table order carries
// precedence among the entries of one prefix and an agent appends what a
// diff adds, so a prefix whose entries changed at all is replaced whole:
// all its old entries removed, all its new ones added in table order.
func Diff(prev, next *vigilpb.VerdictTable) *vigilpb.TableDiff {
	d := &vigilpb.TableDiff{
		BaseVersion: prev.Version, Version: next.Version, PolicyVersion: next.PolicyVersion,
		Quarantined: next.Quarantined, FailMode: next.FailMode,
	}
	d.EgressAdded, d.EgressRemoved = diffGroups(prev.Egress, next.Egress, policy.EgressKey, egressDest)
	d.IngressAdded, d.IngressRemoved = diffGroups(prev.Ingress, next.Ingress, policy.IngressKey, ingressPeer)
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

func egressDest(e *vigilpb.EgressEntry) string   { return e.Destination }
func ingressPeer(e *vigilpb.IngressEntry) string { return e.Peer }

// diffGroups diffs entries grouped by prefix, replacing changed groups whole.
func diffGroups[E any](prev, next []E, key, group func(E) string) (added, removed []E) {
	before, after := groupKeys(prev, key, group), groupKeys(next, key, group)
	for _, e := range next {
		if g := group(e); before[g] != after[g] {
			added = append(added, e)
		}
	}
	for _, e := range prev {
		if g := group(e); before[g] != after[g] {
			removed = append(removed, e)
		}
	}
	return added, removed
}

// groupKeys renders each group's entries, in order, as one string.
func groupKeys[E any](es []E, key, group func(E) string) map[string]string {
	out := map[string]string{}
	for _, e := range es {
		out[group(e)] += key(e) + "\n"
	}
	return out
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
