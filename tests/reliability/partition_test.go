//go:build integration

package reliability

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vigilsec/vigil/internal/testenv"
	"github.com/vigilsec/vigil/tests/harness"
)

// partitionFor is how long the partition test keeps the link down:
// VIGIL_PARTITION (a Go duration), 60s by default.
func partitionFor(t *testing.T) time.Duration {
	v := os.Getenv("VIGIL_PARTITION")
	if v == "" {
		return 60 * time.Second
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		t.Fatalf("VIGIL_PARTITION=%q: %v", v, err)
	}
	return d
}

// Addresses of the veth pair between the two test namespaces; they exist
// only inside those namespaces.
const (
	serverIP = "10.213.77.1"
	agentIP  = "10.213.77.2"
)

// link is a veth pair joining a server namespace and an agent namespace.
type link struct {
	serverNS, agentNS     string
	serverVeth, agentVeth string
}

func run(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// newLink creates the two namespaces and the veth pair between them and
// deletes both namespaces (and with them the pair) when the test ends.
func newLink(t *testing.T) *link {
	t.Helper()
	id := fmt.Sprintf("%d", os.Getpid()%100000)
	l := &link{serverNS: "vigil-rel-srv-" + id, agentNS: "vigil-rel-agt-" + id,
		serverVeth: "vrs" + id, agentVeth: "vra" + id}
	for _, ns := range []string{l.serverNS, l.agentNS} {
		run(t, "ip", "netns", "add", ns)
		t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
		run(t, "ip", "-n", ns, "link", "set", "lo", "up")
	}
	run(t, "ip", "link", "add", l.serverVeth, "type", "veth", "peer", "name", l.agentVeth)
	run(t, "ip", "link", "set", l.serverVeth, "netns", l.serverNS)
	run(t, "ip", "link", "set", l.agentVeth, "netns", l.agentNS)
	run(t, "ip", "-n", l.serverNS, "addr", "add", serverIP+"/24", "dev", l.serverVeth)
	run(t, "ip", "-n", l.agentNS, "addr", "add", agentIP+"/24", "dev", l.agentVeth)
	l.set(t, "up")
	return l
}

// set takes both ends of the pair up or down.
func (l *link) set(t *testing.T, state string) {
	t.Helper()
	run(t, "ip", "-n", l.serverNS, "link", "set", l.serverVeth, state)
	run(t, "ip", "-n", l.agentNS, "link", "set", l.agentVeth, state)
}

// serveIn runs the serve role in netns (outside any test cgroup) on addrs.
func serveIn(t *testing.T, netns string, addrs ...string) {
	t.Helper()
	cmd := harness.InNetNS(netns, os.Args[0], "-test.run=^$")
	cmd.Env = harness.RoleEnv("serve", addrs...)
	p := harness.StartProc(t, t.TempDir()+"/serve.log", cmd)
	harness.WaitFor(t, 10*time.Second, "listeners in "+netns, func() bool {
		return strings.Contains(p.Output(), "listening")
	})
}

func TestPartitionKeepsEnforcingAndDeliversSpooledEvents(t *testing.T) {
	testenv.RequireRoot(t)
	partition := partitionFor(t)
	l := newLink(t)
	s := harness.StartServerIn(t, l.serverNS, serverIP+":7443", "--host", serverIP)
	denied, allowed := "127.0.0.1:18081", "127.0.0.1:18082"
	serveIn(t, l.agentNS, denied, allowed)
	apply(t, s, denyPolicy(t, "", denied))
	cg := testenv.NewCgroup(t)
	a := s.StartAgentIn(t, l.agentNS, "partitioned", cg)

	lp := startLoop(t, cg, l.agentNS, loopPause, denied, allowed)
	time.Sleep(time.Second)
	l.set(t, "down")
	cut := time.Now()
	t.Logf("link down for %s", partition)

	// While the link is down the loop keeps being judged by the last table
	// and nothing it does reaches the server.
	storedAtCut, _ := connectTally(events(t, s, a.Name, "connect"), lp.pid(), denied)
	time.Sleep(partition - time.Since(cut))
	storedAtHeal, _ := connectTally(events(t, s, a.Name, "connect"), lp.pid(), denied)
	during := lp.outcomes(denied)[outcomeEPERM]
	if storedAtHeal["DENY"] > storedAtCut["DENY"]+1 {
		t.Errorf("%d events reached the server through a downed link", storedAtHeal["DENY"]-storedAtCut["DENY"])
	}
	l.set(t, "up")

	time.Sleep(time.Second)
	lp.stop(t)
	t.Logf("denied connects refused by the end of the partition: %d", during)
	waitAllStored(t, s, a.Name, lp, denied, allowed, 0)
	a.Proc.Stop(syscall.SIGTERM)
}
