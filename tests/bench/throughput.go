package bench

import (
	"errors"
	"fmt"
	"net/netip"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Metric names read from the agent and the server.
const (
	mKernelEmitted = "vigil_agent_kernel_events_emitted"
	mKernelLost    = "vigil_agent_kernel_events_lost"
	mSpoolDropped  = "vigil_agent_spool_dropped_events"
	mStored        = "vigil_server_events_stored_total"
)

// EventThroughput is scenario 3: a storm of UDP connects and of fork+exec
// of a small binary in the agent's scope, with the real vigil-agent and
// vigil-server. It reports the events delivered to (stored by) the server
// per second, the agent's CPU, and reconciles every event the kernel
// generated: generated = delivered + kernel ring-buffer losses + spool
// drops + unaccounted, where unaccounted must be zero.
func EventThroughput(e *Env, rep *Report) error {
	srv, err := e.startRealServer()
	if err != nil {
		return err
	}
	if err := applyPolicy(srv.admin, fanOutPolicy); err != nil {
		return err
	}
	cg, err := e.NewCgroup()
	if err != nil {
		return err
	}
	ag, err := srv.startAgent("storm", cg)
	if err != nil {
		return err
	}
	_, udp, err := e.listenIn("-")
	if err != nil {
		return err
	}
	res, err := e.storm(srv, ag, cg, udp)
	if err != nil {
		return err
	}
	res.rows(rep)
	return nil
}

// stormResult is what one storm measured.
type stormResult struct {
	stormSecs, drainSecs   float64 // storm length; storm start to last delivery
	connects, execs        float64 // worker's own count of its operations
	emitted, lost, dropped float64 // kernel and spool counters, deltas
	delivered              float64 // events the server stored, delta
	deliveredAfter         float64 // of those, stored after the storm ended
	afterSecs              float64 // storm end to last delivery
	agentCPU               float64 // agent CPU seconds over storm and drain
}

// storm runs the storm worker and waits for the server to store what the
// agent delivers.
func (e *Env) storm(srv *realServer, ag *realAgent, cg *Cgroup, udp int) (*stormResult, error) {
	a0, s0, err := scrapeBoth(ag, srv)
	if err != nil {
		return nil, err
	}
	cpu0, err := cpuSeconds(ag.cmd.Process.Pid)
	if err != nil {
		return nil, err
	}

	dur := e.rounds(5000, 1500)
	start := time.Now()
	cmd := e.Worker(cg, "storm", fmt.Sprintf("127.0.0.1:%d", udp), strconv.Itoa(dur), smallBinary)
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("storm worker: %w", err)
	}
	stormEnd := time.Now()
	r := &stormResult{stormSecs: stormEnd.Sub(start).Seconds()}
	if _, err := fmt.Sscan(string(out), &r.connects, &r.execs); err != nil {
		return nil, fmt.Errorf("storm output %q: %w", out, err)
	}
	sMid, err := scrape(srv.metrics)
	if err != nil {
		return nil, err
	}

	last, err := waitDelivered(srv, ag, s0[mStored], a0, stormEnd)
	if err != nil {
		return nil, err
	}
	r.drainSecs = last.Sub(start).Seconds()
	r.afterSecs = last.Sub(stormEnd).Seconds()
	cpu1, err := cpuSeconds(ag.cmd.Process.Pid)
	if err != nil {
		return nil, err
	}
	r.agentCPU = cpu1 - cpu0

	a1, s1, err := scrapeBoth(ag, srv)
	if err != nil {
		return nil, err
	}
	r.emitted = a1[mKernelEmitted] - a0[mKernelEmitted]
	r.lost = a1[mKernelLost] - a0[mKernelLost]
	r.dropped = a1[mSpoolDropped] - a0[mSpoolDropped]
	r.delivered = s1[mStored] - s0[mStored]
	r.deliveredAfter = s1[mStored] - sMid[mStored]
	return r, nil
}

func scrapeBoth(ag *realAgent, srv *realServer) (a, s map[string]float64, err error) {
	if a, err = scrape(ag.metrics); err != nil {
		return nil, nil, err
	}
	s, err = scrape(srv.metrics)
	return a, s, err
}

// agentCountersEvery is how often the agent refreshes its kernel counter
// metrics (agent.Config.CountersEvery's default), plus a margin.
const agentCountersEvery = 6 * time.Second

// waitDelivered polls until every event the kernel generated since a0 is
// stored or counted lost, or until nothing was stored for 3 s; it returns
// when the server stored its last event. It waits at least until the
// agent's counter metrics were refreshed after the storm ended.
func waitDelivered(srv *realServer, ag *realAgent, stored0 float64, a0 map[string]float64,
	stormEnd time.Time) (time.Time, error) {
	lastCount, lastChange := -1.0, time.Now()
	for time.Since(stormEnd) < agentCountersEvery || time.Since(lastChange) < 3*time.Second {
		a, s, err := scrapeBoth(ag, srv)
		if err != nil {
			return time.Time{}, err
		}
		delivered := s[mStored] - stored0
		if delivered != lastCount {
			lastCount, lastChange = delivered, time.Now()
		}
		generated := a[mKernelEmitted] + a[mKernelLost] - a0[mKernelEmitted] - a0[mKernelLost]
		losses := a[mKernelLost] + a[mSpoolDropped] - a0[mKernelLost] - a0[mSpoolDropped]
		settled := time.Since(stormEnd) >= agentCountersEvery
		if settled && generated > 0 && delivered+losses >= generated {
			return lastChange, nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return lastChange, nil
}

func (r *stormResult) rows(rep *Report) {
	generated := r.emitted + r.lost
	unaccounted := max(generated-r.delivered-r.lost-r.dropped, 0)
	add := func(metric string, v float64, unit string, t *Target, note string) {
		rep.Add(Row{Scenario: "throughput", Variant: "vigil-agent", Metric: metric, Value: v,
			Unit: unit, Target: t, Note: note})
	}
	add("events delivered to server", r.delivered/r.drainSecs, "events/s",
		&Target{Bound: 200_000}, "")
	if r.afterSecs > 0 {
		add("delivered after the storm ended", r.deliveredAfter/r.afterSecs, "events/s", nil,
			"agent and server alone on the CPUs")
	}
	add("events generated by kernel", generated/r.stormSecs, "events/s", nil,
		fmt.Sprintf("%.0f connects and %.0f execs by the workload", r.connects, r.execs))
	add("agent CPU", 100*r.agentCPU/r.drainSecs, "% of a core", nil, "")
	if r.delivered > 0 {
		add("agent CPU per delivered event", 1e6*r.agentCPU/r.delivered, "us", nil,
			fmt.Sprintf("%.0f events/s per fully used core", r.delivered/r.agentCPU))
	}
	add("kernel ring buffer losses (counted)", r.lost, "events", nil, "")
	add("spool drops (counted)", r.dropped, "events", nil, "")
	add("unaccounted losses", unaccounted, "events", &Target{Max: true, Bound: 0},
		fmt.Sprintf("generated %.0f = delivered %.0f + counted %.0f", generated, r.delivered, r.lost+r.dropped))
}

// workStorm: TARGET MILLIS BINARY. For MILLIS ms, one thread per CPU
// connects a UDP socket to TARGET in a loop while another forks and execs
// BINARY; prints "CONNECTS EXECS".
func workStorm(args []string) error {
	if len(args) != 3 {
		return errors.New("want TARGET MILLIS BINARY")
	}
	ms, err := strconv.Atoi(args[1])
	if err != nil {
		return fmt.Errorf("parse duration: %w", err)
	}
	to := netip.MustParseAddrPort(args[0])
	sa := &unix.SockaddrInet4{Addr: to.Addr().As4(), Port: int(to.Port())}
	until := time.Now().Add(time.Duration(ms) * time.Millisecond)

	var connects, execs atomic.Int64
	errc := make(chan error, runtime.NumCPU()+1)
	var wg sync.WaitGroup
	for range runtime.NumCPU() {
		wg.Go(func() { errc <- connectStorm(sa, until, &connects) })
	}
	wg.Go(func() { errc <- execStorm(args[2], until, &execs) })
	wg.Wait()
	close(errc)
	for err := range errc {
		if err != nil {
			return err
		}
	}
	fmt.Println(connects.Load(), execs.Load())
	return nil
}

func connectStorm(sa unix.Sockaddr, until time.Time, n *atomic.Int64) error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("socket: %w", err)
	}
	defer unix.Close(fd)
	for i := 0; ; i++ {
		if i%256 == 0 && time.Now().After(until) {
			return nil
		}
		if err := unix.Connect(fd, sa); err != nil {
			return fmt.Errorf("connect: %w", err)
		}
		n.Add(1)
	}
}

func execStorm(bin string, until time.Time, n *atomic.Int64) error {
	for time.Now().Before(until) {
		pid, err := syscall.ForkExec(bin, []string{bin}, &syscall.ProcAttr{})
		if err != nil {
			return fmt.Errorf("fork exec: %w", err)
		}
		var ws syscall.WaitStatus
		if _, err := syscall.Wait4(pid, &ws, 0, nil); err != nil {
			return err
		}
		n.Add(1)
	}
	return nil
}
