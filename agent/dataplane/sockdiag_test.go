package dataplane

import (
	"errors"
	"net"
	"net/netip"
	"os/exec"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestTrackedConnsResetByAddress checks that a connection made in scope is
// tracked while it is open and that netlink SOCK_DESTROY on the tracked
// addresses alone resets it, without the walk of every socket; the entry
// leaves once the socket is closed.
func TestTrackedConnsResetByAddress(t *testing.T) {
	for _, network := range []string{"127.0.0.1:0", "[::1]:0"} {
		t.Run(network, func(t *testing.T) {
			d, cg := openScoped(t, Config{})
			ln, err := net.Listen("tcp", network)
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			addr := netip.MustParseAddrPort(ln.Addr().String())
			holder, _ := startHelper(t, cg, "hold", addr.String())
			server, err := ln.Accept()
			if err != nil {
				t.Fatal(err)
			}
			defer server.Close()

			conns, err := d.trackedConns(bpfCutKey{Addr: addr.Addr().As16(), Port: addr.Port()})
			if err != nil || len(conns) != 1 {
				t.Fatalf("tracked connections to %v: %v, %v; want one", addr, conns, err)
			}
			if n, err := resetConns(conns); err != nil || n != 1 {
				t.Fatalf("reset: %d, %v; want 1", n, err)
			}
			var ee *exec.ExitError
			if err := holder.Wait(); !errors.As(err, &ee) || ee.ExitCode() != exitReset {
				t.Errorf("holder: %v, want exit %d (connection aborted)", err, exitReset)
			}
			_ = server.SetReadDeadline(time.Now().Add(2 * time.Second))
			if _, err := server.Read(make([]byte, 1)); !errors.Is(err, unix.ECONNRESET) {
				t.Errorf("peer read: %v, want connection reset", err)
			}
			if conns, _ := d.trackedConns(bpfCutKey{Addr: addr.Addr().As16()}); len(conns) != 0 {
				t.Errorf("closed connection still tracked: %v", conns)
			}
			if n, err := resetConns(conns); err != nil || n != 0 {
				t.Errorf("reset of a closed connection: %d, %v; want 0 and no error", n, err)
			}
		})
	}
}
