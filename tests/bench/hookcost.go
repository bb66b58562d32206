package bench

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

	"github.com/vigilsec/vigil/agent/dataplane"
)

// hookCosts is a diagnostic pass after the connect rounds: with the
// kernel's BPF run-time statistics on (while a file descriptor holds them
// on; they cost a little themselves, so no ratio is taken here) and the
// smallest and the largest table in turn, it runs one TCP and one UDP
// sample and reports what each of the scope's programs cost per operation.
// That says where Vigil's overhead goes. The tracepoint programs are
// global: their runs include other processes' activity.
func (e *Env) hookCosts(cg *Cgroup, t connectTarget, rep *Report) error {
	d, closeFn, err := e.openDataplane(cg)
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

	for _, n := range []int{tableSizes[0], tableSizes[len(tableSizes)-1]} {
		if err := d.ApplyTable(egressTable(n)); err != nil {
			return err
		}
		for _, proto := range []string{"tcp", "udp"} {
			if err := e.hookCostSample(cg, t, proto, progs, sizeName("vigil", n), rep); err != nil {
				return err
			}
		}
	}
	return nil
}

func (e *Env) hookCostSample(cg *Cgroup, t connectTarget, proto string, progs map[string]*ebpf.Program,
	variant string, rep *Report) error {
	port, ops := t.tcp, 4000
	if proto == "udp" {
		port, ops = t.udp, 20000
	}
	target := fmt.Sprintf("127.0.0.1:%d", port)
	cmd := e.Worker(cg, "connect", proto, t.netns, target, strconv.Itoa(ops))
	return e.hookCostRun(cmd, ops, progs, "connect-"+proto, variant, rep)
}

// hookCostRun runs a measuring worker of ops operations and reports each
// program's run time per operation.
func (e *Env) hookCostRun(cmd *exec.Cmd, ops int, progs map[string]*ebpf.Program,
	scenario, variant string, rep *Report) error {
	before, err := programStats(progs)
	if err != nil {
		return err
	}
	if _, err := e.runSample(cmd); err != nil {
		return fmt.Errorf("hook costs %s: %w", scenario, err)
	}
	after, err := programStats(progs)
	if err != nil {
		return err
	}

	// Workers warm up with ops/20 operations (at least one) before they
	// measure.
	total := float64(ops + max(ops/20, 1))
	for _, name := range sortedKeys(after) {
		runs := float64(after[name].RunCount - before[name].RunCount)
		if runs < total/10 {
			continue
		}
		ns := float64(after[name].Runtime-before[name].Runtime) / total
		rep.Add(Row{Scenario: scenario, Variant: variant, Metric: "hook " + name + " ns/op",
			Value: ns, Unit: "ns", Note: fmt.Sprintf("%.1f runs per op", runs/total)})
	}
	return nil
}

// scopePrograms opens the programs of the links pinned at pin, by hook
// name (the link pin's name without its "link_" prefix).
func scopePrograms(pin string) (map[string]*ebpf.Program, error) {
	entries, err := os.ReadDir(pin)
	if err != nil {
		return nil, err
	}
	out := map[string]*ebpf.Program{}
	for _, ent := range entries {
		name, ok := strings.CutPrefix(ent.Name(), "link_")
		if !ok {
			continue
		}
		p, err := linkProgram(filepath.Join(pin, ent.Name()))
		if err != nil {
			return nil, err
		}
		out[name] = p
	}
	return out, nil
}

func linkProgram(path string) (*ebpf.Program, error) {
	l, err := link.LoadPinnedLink(path, nil)
	if err != nil {
		return nil, fmt.Errorf("load link %s: %w", path, err)
	}
	defer l.Close()
	info, err := l.Info()
	if err != nil {
		return nil, err
	}
	p, err := ebpf.NewProgramFromID(info.Program)
	if err != nil {
		return nil, fmt.Errorf("open program of %s: %w", path, err)
	}
	return p, nil
}

func closePrograms(progs map[string]*ebpf.Program) {
	for _, p := range progs {
		p.Close()
	}
}

type progStats struct {
	Runtime  time.Duration
	RunCount uint64
}

func programStats(progs map[string]*ebpf.Program) (map[string]progStats, error) {
	out := map[string]progStats{}
	for name, p := range progs {
		s, err := p.Stats()
		if err != nil {
			return nil, fmt.Errorf("stats of %s: %w", name, err)
		}
		out[name] = progStats{Runtime: s.Runtime, RunCount: s.RunCount}
	}
	return out, nil
}
