package dataplane

import (
	"errors"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// acceptOne listens on loopback outside the scope and hands the first
// accepted connection to the test.
func acceptOne(t *testing.T) (netip.AddrPort, <-chan net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	conns := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err == nil {
			conns <- c
		}
	}()
	return netip.MustParseAddrPort(ln.Addr().String()), conns
}

func TestCutResetsAndBlocksUntilRestore(t *testing.T) {
	d, cg := openScoped(t, Config{})
	addr, conns := acceptOne(t)
	holder, _ := startHelper(t, cg, "hold", addr.String())
	server := <-conns
	defer server.Close()

	destroyed, err := d.Cut(Peer{Addr: addr.Addr(), Port: addr.Port()})
	if err != nil {
		t.Fatalf("cut: %v", err)
	}
	if destroyed != 1 {
		t.Errorf("cut destroyed %d sockets, want 1", destroyed)
	}
	var ee *exec.ExitError
	if err := holder.Wait(); !errors.As(err, &ee) || ee.ExitCode() != exitReset {
		t.Errorf("holder: %v, want exit %d (connection aborted)", err, exitReset)
	}
	_ = server.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := server.Read(make([]byte, 1)); !errors.Is(err, unix.ECONNRESET) {
		t.Errorf("peer read: %v, want connection reset", err)
	}

	if got := runHelperExit(t, cg, "connect", addr.String()); got != exitEPERM {
		t.Errorf("connect while cut: exit %d, want EPERM", got)
	}
	if err := d.Restore(Peer{Addr: addr.Addr(), Port: addr.Port()}); err != nil {
		t.Fatalf("restore: %v", err)
	}
	if got := runHelperExit(t, cg, "connect", addr.String()); got != exitOK {
		t.Errorf("connect after restore: exit %d, want success", got)
	}
}

func TestTableCutBlocksWholeAddress(t *testing.T) {
	d, cg := openScoped(t, Config{})
	ln := listenTCP(t, "127.0.0.5:0")
	peer := Peer{Addr: netip.MustParseAddr("127.0.0.5")}
	if err := d.ApplyTable(Table{Cut: []Peer{peer}}); err != nil {
		t.Fatal(err)
	}
	if got := runHelperExit(t, cg, "connect", ln.String()); got != exitEPERM {
		t.Errorf("connect to table-cut address: exit %d, want EPERM", got)
	}
	if err := d.ApplyTable(Table{}); err != nil {
		t.Fatal(err)
	}
	if got := runHelperExit(t, cg, "connect", ln.String()); got != exitOK {
		t.Errorf("connect after the table dropped the cut: exit %d, want success", got)
	}
}

// TestAdoptAfterLoaderExits loads and applies from a child process that
// exits, checks enforcement holds, adopts it here, and cleans it up.
func TestAdoptAfterLoaderExits(t *testing.T) {
	cg := newScopeCgroup(t)
	pin := testPinPath(cg.Path)
	t.Cleanup(func() { _ = Cleanup(pin) })
	target := listenTCP(t, "127.0.0.1:0")

	self, _ := os.Executable()
	loader := exec.Command(self, cg.Path, target.String())
	loader.Env = append(os.Environ(), helperEnv+"=adopt", "VIGIL_PIN_PATH="+pin)
	if out, err := loader.CombinedOutput(); err != nil {
		t.Fatalf("loader: %v: %s", err, out)
	}
	if got := runHelperExit(t, cg, "connect", target.String()); got != exitEPERM {
		t.Fatalf("after the loader exited: exit %d, want EPERM", got)
	}

	d, err := Open(Config{CgroupPath: cg.Path, PinPath: pin})
	if err != nil {
		t.Fatalf("adopt: %v", err)
	}
	if got := runHelperExit(t, cg, "connect", target.String()); got != exitEPERM {
		t.Errorf("after adoption: exit %d, want EPERM", got)
	}
	for name, ok := range d.Capabilities().Hooks {
		if !ok {
			t.Errorf("adopted hook %s not loaded", name)
		}
	}
	d.Close()
	if err := Cleanup(pin); err != nil {
		t.Fatal(err)
	}
	// Links detach once their last reference is released, asynchronously.
	got := exitEPERM
	for i := 0; i < 50 && got != exitOK; i++ {
		time.Sleep(20 * time.Millisecond)
		got = runHelperExit(t, cg, "connect", target.String())
	}
	if got != exitOK {
		t.Errorf("after cleanup: exit %d, want success (nothing attached)", got)
	}
	if entries, _ := os.ReadDir(pin); len(entries) != 0 {
		t.Errorf("pins left: %v", entries)
	}
}

func testPinPath(cgroupPath string) string {
	return DefaultPinRoot + "/test-" + strings.TrimPrefix(cgroupPath[strings.LastIndex(cgroupPath, "/"):], "/")
}
