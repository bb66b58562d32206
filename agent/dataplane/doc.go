// Package dataplane is Vigil's kernel data plane: it loads the eBPF programs
// of bpf/ (compiled by bpf2go into this package), attaches them to a scope
// (a cgroup v2 directory), and drives them through maps: verdict tables,
// kills, cuts and the event ring buffer.
//
// The agent's apply layer and event pipeline call it; nothing else should.
//
// Resources: a Dataplane owns file descriptors for its maps, programs, links
// and the scope directory, released by Close. Links and maps are pinned
// under the pin path (default /sys/fs/bpf/vigil/<scope>), so enforcement
// continues after Close and after the process exits; Open on the same pin
// path adopts them without a gap, and Cleanup detaches and removes them.
//
// Adoption needs the pinned maps to have the layout of this build; after an
// upgrade that changes a map, Open fails and the scope must be cleaned up
// (which lifts enforcement until the next Open).
//
// Sockets are judged by the cgroup they were created in: a socket created
// outside the scope and passed into it is not judged by this scope's hooks.
package dataplane
