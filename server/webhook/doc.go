// Package webhook receives results from existing security systems (EDR, IDS)
// over HTTPS and records them as findings through the engine's Report.
//
// A caller signs each request with HMAC-SHA256 over timestamp + "." + body
// using a shared secret, sending X-Vigil-Timestamp (unix seconds) and
// X-Vigil-Signature ("sha256=" + hex). Handler refuses a bad or missing
// signature, a timestamp outside the replay window, a signature already seen
// within the window, and bodies over the size limit, each with a clear 4xx.
//
// The vigil-server command builds a Handler and serves it with Serve, which
// owns the listener it is given and its connections until its context ends.
package webhook
