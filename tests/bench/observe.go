package bench

import (
	"fmt"
	"math/rand/v2"
	"strconv"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/vigilsec/vigil/agent/dataplane"
)

// smallBinary is what the exec benchmark forks and executes.
const smallBinary = "/bin/true"

// ObserveOverhead is scenario 2: fork+exec+wait of a small binary and a
// loopback TCP connect from a process in a scope, with no agent, with
// Vigil's data plane observing (exec, fork, exit and connect events drained
// from the ring buffer as the agent does), and with auditd recording the
// equivalent execve and connect audit rules. Variants alternate within
// every round.
func ObserveOverhead(e *Env, rep *Report) error {
	cg, err := e.NewCgroup()
	if err != nil {
		return err
	}
	tcp, _, err := e.listenIn("-")
	if err != nil {
		return err
	}
	variants := []string{"none", "vigil"}
	audit, auditErr := e.startAuditd()
	if auditErr == nil {
		variants = append(variants, "auditd")
	}

	s := map[string]samples{"exec": {}, "tcp": {}, "exec-cpu": {}, "tcp-cpu": {}}
	for range e.rounds(7, 2) {
		rand.Shuffle(len(variants), func(i, j int) { variants[i], variants[j] = variants[j], variants[i] })
		for _, v := range variants {
			if err := e.observeSample(cg, v, audit, tcp, s); err != nil {
				return err
			}
		}
	}
	observeRows(rep, s, auditErr)
	return e.execHookCosts(cg, rep)
}

// execHookCosts reports what each of the data plane's programs costs per
// fork+exec+wait, from the kernel's BPF run-time statistics.
func (e *Env) execHookCosts(cg *Cgroup, rep *Report) error {
	_, closeFn, err := e.openDataplane(cg)
	if err != nil {
		return err
	}
	defer closeFn()
	stats, err := ebpf.EnableStats(uint32(unix.BPF_STATS_RUN_TIME))
	if err != nil {
		return fmt.Errorf("enable BPF statistics: %w", err)
	}
	defer stats.Close()
	progs, err := scopePrograms(dataplane.PinPathFor(cg.Path))
	if err != nil {
		return err
	}
	defer closePrograms(progs)
	n := e.rounds(400, 100)
	cmd := e.Worker(cg, "exec", smallBinary, strconv.Itoa(n))
	return e.hookCostRun(cmd, n, progs, "observe-exec", "vigil", rep)
}

// observeSample sets a variant up, measures exec and connect, and tears it
// down again.
func (e *Env) observeSample(cg *Cgroup, variant string, audit *auditd, tcp int, s map[string]samples) error {
	switch variant {
	case "vigil":
		_, closeFn, err := e.openDataplane(cg)
		if err != nil {
			return err
		}
		defer closeFn()
	case "auditd":
		if err := audit.addRules(); err != nil {
			return err
		}
		defer audit.removeRules()
	}

	n := e.rounds(400, 100)
	v, err := e.runSample(e.Worker(cg, "exec", smallBinary, strconv.Itoa(n)))
	if err != nil {
		return fmt.Errorf("%s exec: %w", variant, err)
	}
	s["exec"].add(variant, v.wall)
	s["exec-cpu"].add(variant, v.cpu)
	target := fmt.Sprintf("127.0.0.1:%d", tcp)
	v, err = e.runSample(e.Worker(cg, "connect", "tcp", "-", target, strconv.Itoa(e.rounds(4000, 1000))))
	if err != nil {
		return fmt.Errorf("%s connect: %w", variant, err)
	}
	s["tcp"].add(variant, v.wall)
	s["tcp-cpu"].add(variant, v.cpu)
	return nil
}

func observeRows(rep *Report, s map[string]samples, auditErr error) {
	for _, op := range []string{"exec", "tcp"} {
		for _, clock := range []string{"wall", "cpu"} {
			key, metric := op, "wall ns/op"
			if clock == "cpu" {
				key, metric = op+"-cpu", "cpu ns/op"
			}
			observeClockRows(rep, s[key], "observe-"+op, metric, auditErr)
		}
	}
}

func observeClockRows(rep *Report, s samples, scen, metric string, auditErr error) {
	rep.Add(s.ratioRow(scen, "none", "", metric, "ns", nil))
	rep.Add(s.ratioRow(scen, "vigil", "none", metric, "ns", &Target{OnRatio: true, Max: true, Bound: 1.05}))
	if auditErr != nil {
		rep.Unavailable(scen, "auditd", metric, auditErr.Error())
		return
	}
	rep.Add(s.ratioRow(scen, "auditd", "none", metric, "ns", nil))
	rep.Add(s.ratioRow(scen, "vigil", "auditd", metric+" vs auditd", "ns", nil))
}
