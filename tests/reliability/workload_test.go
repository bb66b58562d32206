//go:build integration

package reliability

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vigilsec/vigil/internal/testenv"
	"github.com/vigilsec/vigil/tests/harness"
)

// The test binary doubles as the workload: started in a role (inside a
// test cgroup, and a test network namespace where the scenario needs one)
// it plays that role instead of running tests.
func init() {
	harness.RunRole(map[string]harness.Role{
		"loop":  connectLoop,
		"serve": serveAndClose,
		"flood": flood,
		"named": renamedDial,
		"hold":  holdConn,
	})
}

// Outcomes of one connect attempt as the loop reports them.
const (
	outcomeOK    = "ok"
	outcomeEPERM = "eperm"
)

// connectLoop waits args[0] (a duration) between attempts and connects to
// each of the other arguments in turn, printing "TARGET OUTCOME" per attempt
// until SIGTERM, which ends it after the attempt in progress so every
// attempt made is reported.
func connectLoop(args []string) error {
	pause, err := time.ParseDuration(args[0])
	if err != nil {
		return err
	}
	targets := args[1:]
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM)
	fmt.Println("started")
	for {
		for _, target := range targets {
			select {
			case <-stop:
				fmt.Println("stopped")
				return nil
			default:
			}
			fmt.Println(target, attempt(target))
			time.Sleep(pause)
		}
	}
}

// attempt makes one TCP connect and names its outcome.
func attempt(target string) string {
	c, err := net.DialTimeout("tcp", target, time.Second)
	switch {
	case err == nil:
		c.Close()
		return outcomeOK
	case errors.Is(err, syscall.EPERM):
		return outcomeEPERM
	}
	return "other:" + strings.ReplaceAll(err.Error(), " ", "_")
}

// serveAndClose accepts connections on each address and closes them.
func serveAndClose(addrs []string) error {
	for _, addr := range addrs {
		l, err := net.Listen("tcp", addr)
		if err != nil {
			return err
		}
		go acceptAndClose(l)
	}
	fmt.Println("listening")
	select {}
}

func acceptAndClose(l net.Listener) {
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		c.Close()
	}
}

// flood makes N connects to target as fast as it can and prints how many
// the kernel refused.
func flood(args []string) error {
	var n int
	if _, err := fmt.Sscan(args[1], &n); err != nil {
		return err
	}
	refused := 0
	for range n {
		if attempt(args[0]) == outcomeEPERM {
			refused++
		}
	}
	fmt.Println("refused", refused)
	return nil
}

// workload returns the test binary in role, started inside cg and, when
// netns is set, inside that network namespace.
func workload(t *testing.T, cg *testenv.Cgroup, netns, role string, args ...string) *exec.Cmd {
	t.Helper()
	return harness.Workload(t, cg, netns, role, args...)
}

// loop is a running connectLoop whose outcomes are tallied.
type loop struct {
	cmd  *exec.Cmd
	done chan struct{}

	mu     sync.Mutex
	counts map[string]map[string]int // target -> outcome -> attempts; guarded by mu
}

// loopPause is the pause between a loop's attempts where the test counts
// every event: slow enough to stay within the server's query cap.
const loopPause = 25 * time.Millisecond

// startLoop starts connectLoop over targets, pause apart, inside cg (and
// netns) and waits until it runs; the loop is killed when the test ends.
func startLoop(t *testing.T, cg *testenv.Cgroup, netns string, pause time.Duration, targets ...string) *loop {
	t.Helper()
	args := append([]string{pause.String()}, targets...)
	l := &loop{cmd: workload(t, cg, netns, "loop", args...), done: make(chan struct{}),
		counts: map[string]map[string]int{}}
	out, err := l.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := l.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.cmd.Process.Kill(); <-l.done })

	started := make(chan struct{})
	go l.read(out, started)
	select {
	case <-started:
	case <-time.After(10 * time.Second):
		t.Fatal("connect loop did not start")
	}
	return l
}

// read tallies the loop's lines until its output ends.
func (l *loop) read(out io.Reader, started chan struct{}) {
	defer close(l.done)
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 1 && f[0] == "started" {
			close(started)
			continue
		}
		if len(f) != 2 {
			continue
		}
		l.mu.Lock()
		if l.counts[f[0]] == nil {
			l.counts[f[0]] = map[string]int{}
		}
		l.counts[f[0]][f[1]]++
		l.mu.Unlock()
	}
	l.cmd.Wait()
}

// stop ends the loop after its current attempt and waits for its report.
func (l *loop) stop(t *testing.T) {
	t.Helper()
	l.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-l.done:
	case <-time.After(10 * time.Second):
		t.Fatal("connect loop did not stop")
	}
}

// outcomes returns a copy of target's outcome counts so far.
func (l *loop) outcomes(target string) map[string]int {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := map[string]int{}
	for k, v := range l.counts[target] {
		out[k] = v
	}
	return out
}

// pid is the loop process's pid (the test binary's, after nsenter).
func (l *loop) pid() int { return l.cmd.Process.Pid }

// listen opens TCP listeners on loopback that accept and close; it returns
// their addresses.
func listen(t *testing.T, n int) []string {
	t.Helper()
	var addrs []string
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { l.Close() })
		go acceptAndClose(l)
		addrs = append(addrs, l.Addr().String())
	}
	return addrs
}
