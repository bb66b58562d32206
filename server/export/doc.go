// Package export publishes every Vigil event — observations, findings,
// levels, decisions and instructions — to external systems in one schema,
// following OCSF: Process Activity (1007), Network Activity (4001), Detection
// Finding (2004), and the Base Event class for the rest, with Vigil's own
// fields under "unmapped".
//
// The server's event recorder calls Exporter.Publish for each stored event.
// Publish never blocks: each sink (a rotated JSON-lines file, syslog RFC 5424
// over TCP, UDP or a unix socket, an HTTP endpoint receiving batches) has a
// bounded queue drained by its own goroutine, and a record that does not fit
// is dropped and counted. The Exporter owns its sinks, their files and
// connections, and their goroutines until Close.
package export
