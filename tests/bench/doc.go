// Package bench measures what Vigil costs and how far it scales, side by
// side with running without it and with the tools an operator would use
// instead (an nftables set, auditd rules). Each scenario interleaves its
// variants in rounds and reports medians, so the noise of a shared machine
// falls on every variant alike; results are ratios to a baseline measured
// in the same run, never absolute times from another run.
//
// The runner tests/bench/cmd/benchtable (make bench) calls Run; the
// Benchmark functions of this package run the same scenarios under go test.
// Every scenario creates its own cgroups, network namespaces, nftables
// tables and audit rules, and the Env it runs in removes them (and kills
// every process it started) when it closes, also after a failure. Network
// traffic stays on loopback. Workers that must run inside a scope are this
// program re-executed in worker mode (see MaybeRunWorker).
package bench
