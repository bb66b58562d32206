// Package intel loads threat-intelligence feeds and turns them into
// policy.Indicator values for the decision engine.
//
// A feed is a local file or an http(s) URL holding either CSV (type, value,
// confidence) or a STIX 2.1 bundle of indicators. ParseCSV and ParseSTIX are
// pure and strict: a malformed feed is rejected with a *ParseError naming the
// source, the line or object id and the field, while well-formed entries the
// package does not support (other indicator types, other STIX patterning) are
// counted as skipped with a reason, never misread.
//
// The vigil-server command owns a Manager, which reloads every feed on its own
// interval and hands the engine a new indicator set only when it changed; a
// feed that fails to load keeps its previous set. The Manager owns one
// goroutine per feed for the lifetime of Run and nothing else.
package intel
