package api

import (
	"net/netip"
	"unicode/utf8"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	vigilpb "github.com/vigilsec/vigil/gen/vigil/v1"
)

// Bounds on what one agent reports about itself. Its addresses reach other
// agents' tables and its posture reaches every agent listing, so without a
// bound one agent could make another's table, or an operator's listing,
// larger than a message may be.
const (
	// maxHelloAddresses bounds the addresses of one Hello.
	maxHelloAddresses = 64
	// maxPostureList bounds each list of a posture (users, listening
	// sockets, process names); the agent caps its lists at the same figure.
	maxPostureList = 512
	// maxPostureString bounds each string of a posture.
	maxPostureString = 256
	// maxCapabilities bounds the hooks and enforcement names of a Hello.
	maxCapabilities = 64
)

// checkHello refuses a hello, the first on a stream or a later one, that
// names another agent than the certificate (PermissionDenied), or carries
// more addresses or capabilities than allowed, or an address that does not
// parse (InvalidArgument).
func checkHello(hello *vigilpb.Hello, name string) error {
	if hello.GetName() != name {
		return status.Errorf(codes.PermissionDenied,
			"hello names agent %q but the certificate was issued to %q", hello.GetName(), name)
	}
	return checkHelloBounds(hello)
}

func checkHelloBounds(hello *vigilpb.Hello) error {
	addrs := hello.GetAddresses()
	if len(addrs) > maxHelloAddresses {
		return status.Errorf(codes.InvalidArgument, "hello carries %d addresses, more than %d",
			len(addrs), maxHelloAddresses)
	}
	for i, a := range addrs {
		if !parsable(a) {
			return status.Errorf(codes.InvalidArgument, "hello address %d %.64q is not an IP address", i, a)
		}
	}
	caps := hello.GetCapabilities()
	if len(caps.GetHooks()) > maxCapabilities || len(caps.GetEnforcement()) > maxCapabilities {
		return status.Errorf(codes.InvalidArgument, "hello capabilities list more than %d entries",
			maxCapabilities)
	}
	return nil
}

// parsable reports whether s is an IP address or an address with a prefix
// length, the two forms agents report.
func parsable(s string) bool {
	if _, err := netip.ParseAddr(s); err == nil {
		return true
	}
	_, err := netip.ParsePrefix(s)
	return err == nil
}

// clampPosture cuts p's lists and strings to their bounds, in place, and
// reports whether it cut anything.
func clampPosture(p *vigilpb.Posture) bool {
	if p == nil {
		return false
	}
	cut := false
	for _, list := range []*[]string{&p.Users, &p.Listening, &p.ProcessNames} {
		if len(*list) > maxPostureList {
			*list, cut = (*list)[:maxPostureList], true
		}
		for i, s := range *list {
			if len(s) > maxPostureString {
				(*list)[i], cut = truncate(s, maxPostureString), true
			}
		}
	}
	for _, s := range []*string{&p.HostId, &p.Hostname, &p.Os, &p.Platform, &p.PlatformVersion,
		&p.KernelVersion, &p.Hardware} {
		if len(*s) > maxPostureString {
			*s, cut = truncate(*s, maxPostureString), true
		}
	}
	return cut
}

// truncate cuts s to at most n bytes at a character boundary, so the
// result stays valid UTF-8 when s was.
func truncate(s string, n int) string {
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}
