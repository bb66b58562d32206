package bench

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os/exec"
	"strconv"
	"strings"

	"github.com/vigilsec/vigil/agent/dataplane"
)

// tableSizes are the egress table sizes measured.
var tableSizes = []int{0, 10_000, 100_000}

// benchDest is the destination of entry i: IPv4 hosts in 198.18.0.0/15
// and IPv6 hosts in 2001:db8::/32, alternating. Neither range is ever
// routed, and no entry matches loopback.
func benchDest(i int) netip.Prefix {
	if i%2 == 0 {
		a := netip.AddrFrom4([4]byte{198, 18 + byte(i>>16&1), byte(i >> 8), byte(i)})
		return netip.PrefixFrom(a, 32)
	}
	a := netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 12: byte(i >> 24), 13: byte(i >> 16),
		14: byte(i >> 8), 15: byte(i)})
	return netip.PrefixFrom(a, 128)
}

// egressTable has n deny entries for TCP port 443 that never match the
// benchmark's loopback traffic, and allows everything else.
func egressTable(n int) dataplane.Table {
	t := dataplane.Table{DefaultEgress: dataplane.VerdictAllow, Egress: make([]dataplane.EgressRule, n)}
	for i := range t.Egress {
		t.Egress[i] = dataplane.EgressRule{RuleID: uint32(i + 1), Dest: benchDest(i),
			PortMin: 443, PortMax: 443, Proto: dataplane.ProtoTCP, Verdict: dataplane.VerdictDeny}
	}
	return t
}

func sizeName(prefix string, n int) string { return fmt.Sprintf("%s-%dk", prefix, n/1000) }

// openDataplane loads Vigil's data plane for cg with a reader draining its
// events, as the agent consumes them. The returned func closes and unpins
// it; it is also registered to run at Env.Close.
func (e *Env) openDataplane(cg *Cgroup) (*dataplane.Dataplane, func(), error) {
	pin := dataplane.PinPathFor(cg.Path)
	d, err := dataplane.Open(dataplane.Config{CgroupPath: cg.Path, PinPath: pin, Logger: e.Log})
	if err != nil {
		_ = dataplane.Cleanup(pin)
		return nil, nil, fmt.Errorf("open data plane: %w", err)
	}
	rd, err := d.Events()
	if err != nil {
		d.Close()
		_ = dataplane.Cleanup(pin)
		return nil, nil, err
	}
	drained := make(chan struct{})
	go func() {
		defer close(drained)
		for {
			if _, err := rd.Read(); err != nil {
				return
			}
		}
	}()
	done := false
	closeFn := func() {
		if done {
			return
		}
		done = true
		rd.Close()
		<-drained
		d.Close()
		if err := dataplane.Cleanup(pin); err != nil {
			e.Log.Warn("remove pins", "err", err)
		}
	}
	e.Defer(closeFn)
	return d, closeFn, nil
}

// connectTarget is where one variant's workers connect.
type connectTarget struct {
	netns    string
	tcp, udp int
}

// ConnectOverhead is scenario 1: a loopback TCP connect and a UDP
// connect+send from a process in a scope, with no agent, with Vigil's data
// plane holding 0, 10k and 100k egress entries, and with an nftables set of
// the same entries in the output path instead. Each variant runs in its own
// fresh network namespace; a round measures every variant once, in an
// order that changes every round.
func ConnectOverhead(e *Env, rep *Report) error {
	cg, err := e.NewCgroup()
	if err != nil {
		return err
	}
	targets, err := e.connectTargets()
	if err != nil {
		return err
	}
	s := map[string]samples{"tcp": {}, "udp": {}, "tcp-cpu": {}, "udp-cpu": {}}
	for r := range e.rounds(9, 2) {
		if err := e.connectRound(cg, targets, s, r); err != nil {
			return err
		}
	}
	connectRows(rep, s)
	return e.hookCosts(cg, targets["none"], rep)
}

// connectTargets creates a plain namespace and one per nftables size.
func (e *Env) connectTargets() (map[string]connectTarget, error) {
	if err := e.ensureTool("nft", "nftables"); err != nil {
		return nil, err
	}
	out := map[string]connectTarget{}
	add := func(variant, ruleset string) error {
		ns, err := e.NewNetns(strings.ReplaceAll(variant, "-", ""))
		if err != nil {
			return err
		}
		if ruleset != "" {
			if err := e.loadNft(ns, ruleset); err != nil {
				return err
			}
		}
		t := connectTarget{netns: ns}
		t.tcp, t.udp, err = e.listenIn(ns)
		out[variant] = t
		return err
	}
	if err := add("none", ""); err != nil {
		return nil, err
	}
	for _, n := range tableSizes {
		if err := add(sizeName("nft", n), nftEgressTable(n)); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// connectRound measures the variants without our programs (none, nft-*)
// and those with the data plane loaded (vigil-*), the two halves in
// alternating order.
func (e *Env) connectRound(cg *Cgroup, targets map[string]connectTarget, s map[string]samples, r int) error {
	plain := func() error {
		names := []string{"none"}
		for _, n := range tableSizes {
			names = append(names, sizeName("nft", n))
		}
		rand.Shuffle(len(names), func(i, j int) { names[i], names[j] = names[j], names[i] })
		for _, v := range names {
			if err := e.connectSample(cg, targets[v], v, s); err != nil {
				return err
			}
		}
		return nil
	}
	loaded := func() error { return e.vigilSamples(cg, targets["none"], s) }
	if r%2 == 1 {
		plain, loaded = loaded, plain
	}
	if err := plain(); err != nil {
		return err
	}
	return loaded()
}

// vigilSamples loads the data plane and measures each table size.
func (e *Env) vigilSamples(cg *Cgroup, t connectTarget, s map[string]samples) error {
	d, closeFn, err := e.openDataplane(cg)
	if err != nil {
		return err
	}
	defer closeFn()
	sizes := append([]int(nil), tableSizes...)
	rand.Shuffle(len(sizes), func(i, j int) { sizes[i], sizes[j] = sizes[j], sizes[i] })
	for _, n := range sizes {
		if err := d.ApplyTable(egressTable(n)); err != nil {
			return fmt.Errorf("apply %d entries: %w", n, err)
		}
		if err := e.connectSample(cg, t, sizeName("vigil", n), s); err != nil {
			return err
		}
	}
	return nil
}

// connectSample runs one TCP and one UDP worker for a variant.
func (e *Env) connectSample(cg *Cgroup, t connectTarget, variant string, s map[string]samples) error {
	for _, proto := range []string{"tcp", "udp"} {
		port, n := t.tcp, 4000
		if proto == "udp" {
			port, n = t.udp, 20000
		}
		if e.Quick {
			n /= 4
		}
		target := fmt.Sprintf("127.0.0.1:%d", port)
		v, err := e.runSample(e.Worker(cg, "connect", proto, t.netns, target, strconv.Itoa(n)))
		if err != nil {
			return fmt.Errorf("%s %s: %w", variant, proto, err)
		}
		s[proto].add(variant, v.wall)
		s[proto+"-cpu"].add(variant, v.cpu)
	}
	return nil
}

// sample is one worker's mean wall and CPU nanoseconds per operation.
type sample struct{ wall, cpu float64 }

// runSample runs a measuring worker and returns what it printed.
func (e *Env) runSample(cmd *exec.Cmd) (sample, error) {
	out, err := cmd.Output()
	if err != nil {
		return sample{}, fmt.Errorf("worker: %w", err)
	}
	var s sample
	if _, err := fmt.Sscan(string(out), &s.wall, &s.cpu); err != nil {
		return sample{}, fmt.Errorf("worker output %q: %w", out, err)
	}
	return s, nil
}

// connectRows reports wall and CPU time per operation of every variant,
// against no agent and against nftables of the same size.
func connectRows(rep *Report, s map[string]samples) {
	for _, proto := range []string{"tcp", "udp"} {
		for _, clock := range []string{"wall", "cpu"} {
			key, metric := proto, "wall ns/op"
			if clock == "cpu" {
				key, metric = proto+"-cpu", "cpu ns/op"
			}
			connectClockRows(rep, s[key], "connect-"+proto, metric)
		}
	}
}

func connectClockRows(rep *Report, s samples, scen, metric string) {
	rep.Add(s.ratioRow(scen, "none", "", metric, "ns", nil))
	for _, n := range tableSizes {
		var t *Target
		if n == 100_000 {
			t = &Target{OnRatio: true, Max: true, Bound: 1.02}
		}
		rep.Add(s.ratioRow(scen, sizeName("vigil", n), "none", metric, "ns", t))
	}
	for _, n := range tableSizes {
		rep.Add(s.ratioRow(scen, sizeName("nft", n), "none", metric, "ns", nil))
	}
	for _, n := range tableSizes {
		t := &Target{OnRatio: true, Max: true, Bound: 1}
		rep.Add(s.ratioRow(scen, sizeName("vigil", n), sizeName("nft", n), metric+" vs nft", "ns", t))
	}
}
