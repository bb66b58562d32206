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
//
// A table goes live through a slot flip that waits for an RCU grace period,
// tens of milliseconds, and compiling it takes about 3 ms per thousand
// entries. A deny the new table adds is in force within about a
// millisecond anyway, through the pending-deny overlays, when: it differs
// from the previous table of this Open; no allow or audit rule of the new
// table could be judged before it; and the overlays hold it (256 prefixes,
// 8 denies on one prefix counting covering ones, 256 changed rules). Other
// changes, a default that turns to deny, a removed allow, quarantine and
// the first table after Open, wait for the flip.
//
// Cut resets the connections it saw established in scope (up to 65536) at
// once, each by its exact addresses; sockets older than the data plane or
// beyond that number are reset by a walk of every TCP socket, which takes
// milliseconds per ten thousand sockets (time-wait ones included). Both
// reach only the caller's network namespace: sockets in scope in another
// one are not destroyed, their packets are dropped, and they stall.
package dataplane
