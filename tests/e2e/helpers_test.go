//go:build integration

package e2e

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vigilsec/vigil/internal/testenv"
	"github.com/vigilsec/vigil/tests/harness"
)

// The test binary doubles as the workload of the scenarios: started inside a
// test cgroup with a role, it plays a service, a client or a long-lived
// connection instead of running tests.
func init() {
	harness.RunRole(map[string]harness.Role{
		"serve": func(args []string) error { return serve(args[0]) },
		"dial":  func(args []string) error { return dial(args[0], args[1]) },
		"hold":  func(args []string) error { return hold(args[0], args[1]) },
	})
}

// serve accepts connections on addr and echoes what each sends.
func serve(addr string) error {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	fmt.Println("listening")
	for {
		c, err := l.Accept()
		if err != nil {
			return err
		}
		go func() { io.Copy(c, c); c.Close() }()
	}
}

func dialFrom(local, remote string) (net.Conn, error) {
	laddr, err := net.ResolveTCPAddr("tcp", local)
	if err != nil {
		return nil, err
	}
	d := net.Dialer{LocalAddr: laddr, Timeout: 2 * time.Second}
	return d.Dial("tcp", remote)
}

// dial connects once, exchanges a byte and reports the outcome.
func dial(local, remote string) error {
	c, err := dialFrom(local, remote)
	if err != nil {
		if errors.Is(err, syscall.EPERM) {
			fmt.Println("eperm")
			return nil
		}
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Write([]byte{1}); err != nil {
		return err
	}
	if _, err := io.ReadFull(c, make([]byte, 1)); err != nil {
		return err
	}
	fmt.Println("ok")
	return nil
}

// hold keeps one connection open until the peer or the kernel ends it.
func hold(local, remote string) error {
	c, err := dialFrom(local, remote)
	if err != nil {
		return err
	}
	fmt.Println("connected")
	buf := make([]byte, 1)
	for {
		c.SetDeadline(time.Now().Add(500 * time.Millisecond))
		if _, err := c.Write(buf); err != nil {
			fmt.Println("closed:", err)
			return nil
		}
		if _, err := io.ReadFull(c, buf); err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			fmt.Println("closed:", err)
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// workload starts the test binary in role inside cg.
func workload(t *testing.T, cg *testenv.Cgroup, role string, args ...string) *exec.Cmd {
	t.Helper()
	return harness.Workload(t, cg, "", role, args...)
}

// dialOnce runs one client connect inside cg and returns "ok", "eperm" or
// the error text.
func dialOnce(t *testing.T, cg *testenv.Cgroup, local, remote string) string {
	t.Helper()
	out, _ := workload(t, cg, "dial", local, remote).CombinedOutput()
	return strings.TrimSpace(string(out))
}
