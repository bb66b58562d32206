package dataplane

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vigilsec/vigil/internal/testenv"
)

// helperEnv makes the test binary act as a helper process (run inside a
// test cgroup) instead of running tests.
const helperEnv = "VIGIL_DATAPLANE_HELPER"

// Exit codes of the connect helpers.
const (
	exitOK    = 0
	exitEPERM = 13
	exitOther = 2
	exitReset = 20
	exitEOF   = 21
)

func TestMain(m *testing.M) {
	if mode := os.Getenv(helperEnv); mode != "" {
		os.Exit(runHelper(mode, os.Args[1:]))
	}
	os.Exit(m.Run())
}

func runHelper(mode string, args []string) int {
	switch mode {
	case "connect":
		return errnoExit(rawConnect(args[0], unix.SOCK_STREAM))
	case "sendto":
		return errnoExit(rawSendto(args[0]))
	case "connect-loop":
		return connectLoop(args[0], args[1])
	case "connect-until-eperm":
		return connectUntilEPERM(args[0])
	case "hold":
		return hold(args[0])
	case "hold-until-reset":
		return holdUntilReset(args[0])
	case "sleep":
		time.Sleep(time.Hour)
		return exitOK
	case "tree":
		return tree(args[0])
	case "adopt":
		return adopt(args[0], args[1])
	case "listen":
		return listen(args[0])
	}
	return exitOther
}

func errnoExit(err error) int {
	switch {
	case err == nil:
		return exitOK
	case errors.Is(err, unix.EPERM):
		return exitEPERM
	}
	fmt.Fprintln(os.Stderr, err)
	return exitOther
}

// sockaddr turns addr:port into a socket address; IPv6 (mapped included)
// gets an AF_INET6 socket, so ::ffff:a.b.c.d exercises the IPv6 hooks.
func sockaddr(s string) (int, unix.Sockaddr) {
	ap := netip.MustParseAddrPort(s)
	if ap.Addr().Is4() {
		return unix.AF_INET, &unix.SockaddrInet4{Addr: ap.Addr().As4(), Port: int(ap.Port())}
	}
	return unix.AF_INET6, &unix.SockaddrInet6{Addr: ap.Addr().As16(), Port: int(ap.Port())}
}

func rawConnect(addr string, typ int) error {
	family, sa := sockaddr(addr)
	fd, err := unix.Socket(family, typ, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	return unix.Connect(fd, sa)
}

func rawSendto(addr string) error {
	family, sa := sockaddr(addr)
	fd, err := unix.Socket(family, unix.SOCK_DGRAM, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	return unix.Sendto(fd, []byte("vigil"), 0, sa)
}

// connectLoop connects n times, or for n milliseconds when count ends in
// "ms", and prints "allowed denied" counts.
func connectLoop(addr, count string) int {
	n, _ := strconv.Atoi(strings.TrimSuffix(count, "ms"))
	until := time.Now().Add(time.Duration(n) * time.Millisecond)
	timed := strings.HasSuffix(count, "ms")
	allowed, denied := 0, 0
	for i := 0; timed && time.Now().Before(until) || !timed && i < n; i++ {
		err := rawConnect(addr, unix.SOCK_STREAM)
		switch {
		case err == nil:
			allowed++
		case errors.Is(err, unix.EPERM):
			denied++
		default:
			fmt.Fprintln(os.Stderr, err)
			return exitOther
		}
	}
	fmt.Println(allowed, denied)
	return exitOK
}

// hold connects, says "connected", and reports how the connection ended.
func hold(addr string) int {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return exitOther
	}
	fmt.Println("connected")
	_, err = c.Read(make([]byte, 1))
	switch {
	case errors.Is(err, unix.ECONNRESET), errors.Is(err, unix.ECONNABORTED):
		return exitReset
	case err != nil && strings.Contains(err.Error(), "EOF"):
		return exitEOF
	}
	fmt.Fprintln(os.Stderr, err)
	return exitOther
}

// holdUntilReset connects, says "connected", and prints the wall-clock
// time in nanoseconds at which the connection was aborted or reset.
func holdUntilReset(addr string) int {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM, 0)
	if err == nil {
		_, sa := sockaddr(addr)
		err = unix.Connect(fd, sa)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return exitOther
	}
	fmt.Println("connected")
	_, err = unix.Read(fd, make([]byte, 1))
	if !errors.Is(err, unix.ECONNABORTED) && !errors.Is(err, unix.ECONNRESET) {
		fmt.Fprintln(os.Stderr, "read:", err)
		return exitOther
	}
	fmt.Println(time.Now().UnixNano())
	return exitOK
}

// tree starts children that fork without pause, depth levels deep, and
// prints "ready" once its first children run.
func tree(depth string) int {
	d, _ := strconv.Atoi(depth)
	self, _ := os.Executable()
	for range 2 {
		if d > 0 {
			spawn(self, "tree", strconv.Itoa(d-1))
		}
	}
	fmt.Println("ready")
	for {
		spawn(self, "sleep")
		time.Sleep(time.Millisecond)
	}
}

func spawn(self string, args ...string) {
	cmd := exec.Command(self, args[1:]...)
	cmd.Env = append(os.Environ(), helperEnv+"="+args[0])
	_ = cmd.Start()
}

// adopt opens the data plane, applies a table denying addr, and exits
// without cleaning up: enforcement must outlive it.
func adopt(cgroup, addr string) int {
	d, err := Open(Config{CgroupPath: cgroup, PinPath: os.Getenv("VIGIL_PIN_PATH")})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return exitOther
	}
	ap := netip.MustParseAddrPort(addr)
	err = d.ApplyTable(Table{Egress: []EgressRule{{
		RuleID: 7, Dest: netip.PrefixFrom(ap.Addr(), ap.Addr().BitLen()),
		PortMin: ap.Port(), PortMax: ap.Port(), Proto: ProtoTCP, Verdict: VerdictDeny,
	}}})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return exitOther
	}
	d.Close()
	return exitOK
}

// helper returns a command running the test binary as helper mode inside cg.
func helper(t testing.TB, cg *testenv.Cgroup, mode string, args ...string) *exec.Cmd {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := cg.Command(t, self, args...)
	cmd.Env = append(os.Environ(), helperEnv+"="+mode)
	return cmd
}

// runHelperExit runs a helper to completion and returns its exit code.
func runHelperExit(t *testing.T, cg *testenv.Cgroup, mode string, args ...string) int {
	t.Helper()
	out, err := helper(t, cg, mode, args...).CombinedOutput()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if ee.ExitCode() == exitOther {
			t.Logf("helper %s %v: %s", mode, args, out)
		}
		return ee.ExitCode()
	}
	if err != nil {
		t.Fatalf("run helper %s: %v", mode, err)
	}
	return 0
}

// startHelper starts a helper and waits for its first output line.
func startHelper(t testing.TB, cg *testenv.Cgroup, mode string, args ...string) (*exec.Cmd, *bufio.Reader) {
	t.Helper()
	cmd := helper(t, cg, mode, args...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("start helper %s: %v", mode, err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	rd := bufio.NewReader(out)
	if _, err := rd.ReadString('\n'); err != nil {
		t.Fatalf("helper %s: %v", mode, err)
	}
	return cmd, rd
}

// listenTCP accepts and holds connections on addr (outside any scope) until
// the test ends; it returns the bound address.
func listenTCP(t *testing.T, addr string) netip.AddrPort {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("listen %s: %v", addr, err)
	}
	var conns []net.Conn
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				for _, c := range conns {
					c.Close()
				}
				return
			}
			conns = append(conns, c)
		}
	}()
	t.Cleanup(func() { ln.Close(); <-done })
	return netip.MustParseAddrPort(ln.Addr().String())
}

// listen accepts on addr, prints the bound port, and holds connections.
func listen(addr string) int {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return exitOther
	}
	fmt.Println(ln.Addr().(*net.TCPAddr).Port)
	var conns []net.Conn
	for {
		c, err := ln.Accept()
		if err != nil {
			return exitOther
		}
		conns = append(conns, c)
	}
}
