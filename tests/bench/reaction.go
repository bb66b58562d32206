package bench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/vigilsec/vigil/agent/dataplane"
	vigilpb "github.com/vigilsec/vigil/gen/vigil/v1"
	"github.com/vigilsec/vigil/tests/scenario"
)

const (
	deviceAddr  = scenario.DeviceAddr
	serviceAddr = scenario.ServiceAddr
)

// Reaction is scenario 4, with the real binaries: a device agent and a
// service agent, each in its own cgroup. It measures (p50, p99) a finding
// reported to the server until a looping connect on the device gets EPERM
// from its kernel, a kill instruction until the process is reaped, and a
// cut instruction until the peer of the cut connection sees a reset; and,
// to show where the time goes, the Report calls alone and the data plane's
// table swap alone.
func Reaction(e *Env, rep *Report) error {
	rx, err := e.startReaction()
	if err != nil {
		return err
	}
	n := e.rounds(30, 8)
	steps := []struct {
		name, metric string
		p99          float64
		run          func(int) ([]float64, error)
	}{
		{"finding-deny", "report to EPERM", 10, rx.denyLatencies},
		{"kill", "kill to reaped", 5, rx.killLatencies},
		{"cut", "cut to peer reset", 10, rx.cutLatencies},
		{"report-call", "Report call", 0, rx.reportLatencies},
		{"table-swap", "data plane ApplyTable", 0, rx.swapLatencies},
	}
	for _, st := range steps {
		lat, err := st.run(n)
		if err != nil {
			rep.Unavailable("reaction", st.name, st.metric, err.Error())
			continue
		}
		rep.Add(Row{Scenario: "reaction", Variant: st.name, Metric: st.metric + " p50",
			Value: percentile(lat, 50), Unit: "ms", Samples: len(lat)})
		var t *Target
		if st.p99 > 0 {
			t = &Target{Max: true, Bound: st.p99}
		}
		rep.Add(Row{Scenario: "reaction", Variant: st.name, Metric: st.metric + " p99",
			Value: percentile(lat, 99), Unit: "ms", Samples: len(lat), Target: t})
	}
	return nil
}

// swapLatencies times the data plane's ApplyTable alone, in this process
// on a cgroup of its own, alternating between two small tables: the kernel
// part of every table change the other steps wait for.
func (rx *reaction) swapLatencies(n int) ([]float64, error) {
	cg, err := rx.e.NewCgroup()
	if err != nil {
		return nil, err
	}
	d, closeFn, err := rx.e.openDataplane(cg)
	if err != nil {
		return nil, err
	}
	defer closeFn()
	tables := []dataplane.Table{egressTable(10), egressTable(12)}
	var lat []float64
	for i := range n {
		t0 := time.Now()
		if err := d.ApplyTable(tables[i%2]); err != nil {
			return nil, err
		}
		lat = append(lat, ms(time.Since(t0)))
	}
	return lat, nil
}

// reaction is the running setup of the scenario.
type reaction struct {
	e      *Env
	srv    *realServer
	device *Cgroup
	target string        // service address the device connects to
	hold   atomic.Bool   // keep accepted connections for the cut step
	held   chan net.Conn // accepted connections while hold is set
	// reportCalls are the Report call durations in ms; only the deny step
	// writes them, and the report-call step reads them after it.
	reportCalls []float64
}

func (e *Env) startReaction() (*reaction, error) {
	ln, err := net.Listen("tcp4", serviceAddr+":0")
	if err != nil {
		return nil, err
	}
	e.Defer(func() { ln.Close() })
	rx := &reaction{e: e, target: ln.Addr().String(), held: make(chan net.Conn, 64)}
	go rx.accept(ln)

	if rx.srv, err = e.startRealServer(); err != nil {
		return nil, err
	}
	port := ln.Addr().(*net.TCPAddr).Port
	if err := applyPolicy(rx.srv.admin, scenario.Policy(port, "")); err != nil {
		return nil, err
	}
	if rx.device, err = e.NewCgroup(); err != nil {
		return nil, err
	}
	service, err := e.NewCgroup()
	if err != nil {
		return nil, err
	}
	if _, err := rx.srv.startAgent("laptop", rx.device, "--address", deviceAddr); err != nil {
		return nil, err
	}
	_, err = rx.srv.startAgent("crm-host", service, "--address", serviceAddr)
	return rx, err
}

// accept closes probe connections at once and hands over held ones.
func (rx *reaction) accept(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		if rx.hold.Load() {
			rx.held <- c
			continue
		}
		c.Close()
	}
}

func (rx *reaction) report(level string) (int64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	t0 := monoNow()
	_, err := rx.srv.admin.Report(ctx, &vigilpb.ReportRequest{Entity: "device/laptop", Level: level,
		Source: "bench", Reason: "benchmark " + level})
	if err != nil {
		return 0, fmt.Errorf("report %s: %w", level, err)
	}
	rx.reportCalls = append(rx.reportCalls, float64(monoNow()-t0)/1e6)
	return t0, nil
}

// reportLatencies are the durations of the Report calls the deny step made:
// the server's part of a denial (finding stored, levels and tables
// recomputed, diff queued).
func (rx *reaction) reportLatencies(int) ([]float64, error) {
	if len(rx.reportCalls) == 0 {
		return nil, errors.New("no report calls were made")
	}
	return rx.reportCalls, nil
}

// denyLatencies lowers the device's level n times while a probe connects in
// a loop, and measures from the report to the probe's first EPERM.
func (rx *reaction) denyLatencies(n int) ([]float64, error) {
	cmd := rx.e.Worker(rx.device, "probe", deviceAddr, rx.target)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	defer func() { stdin.Close(); cmd.Wait() }()
	lines := bufio.NewScanner(out)
	if _, err := nextState(lines, "ok"); err != nil {
		return nil, err
	}

	var lat []float64
	for range n {
		t0, err := rx.report("low")
		if err != nil {
			return nil, err
		}
		t1, err := nextState(lines, "eperm")
		if err != nil {
			return nil, err
		}
		lat = append(lat, float64(t1-t0)/1e6)
		if t1-t0 > int64(time.Second) {
			rx.e.Log.Warn("slow deny", "ms", (t1-t0)/1e6, "at", time.Now().Add(-time.Duration(monoNow()-t1)))
		}
		if _, err := rx.report("high"); err != nil {
			return nil, err
		}
		if _, err := nextState(lines, "ok"); err != nil {
			return nil, err
		}
	}
	return lat, nil
}

// nextState reads the probe's next line and checks its state.
func nextState(lines *bufio.Scanner, want string) (int64, error) {
	if !lines.Scan() {
		return 0, fmt.Errorf("probe ended waiting for %s", want)
	}
	state, ts, _ := strings.Cut(lines.Text(), " ")
	if state != want {
		return 0, fmt.Errorf("probe says %q, want %s", lines.Text(), want)
	}
	return strconv.ParseInt(ts, 10, 64)
}

// killLatencies starts a process on the device n times and measures from
// the kill request to the process being reaped.
func (rx *reaction) killLatencies(n int) ([]float64, error) {
	var lat []float64
	for range n {
		cmd := rx.e.Worker(rx.device, "sleep")
		if err := cmd.Start(); err != nil {
			return nil, err
		}
		reaped := make(chan time.Time, 1)
		go func() { cmd.Wait(); reaped <- time.Now() }()
		time.Sleep(50 * time.Millisecond) // the agent learns of the process from its exec event

		t0 := time.Now()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		resp, err := rx.srv.admin.Kill(ctx, &vigilpb.KillRequest{Agent: "laptop", Pid: uint32(cmd.Process.Pid),
			Reason: "benchmark"})
		cancel()
		// An unspecified outcome means the agent did not acknowledge within
		// the server's timeout; the process still counts once it is reaped.
		if err == nil && resp.GetOutcome() != vigilpb.InstructionOutcome_INSTRUCTION_OUTCOME_DONE &&
			resp.GetOutcome() != vigilpb.InstructionOutcome_INSTRUCTION_OUTCOME_UNSPECIFIED {
			err = fmt.Errorf("kill outcome %v: %s", resp.GetOutcome(), resp.GetError())
		}
		if err != nil {
			cmd.Process.Kill()
			<-reaped
			return nil, err
		}
		select {
		case t1 := <-reaped:
			lat = append(lat, ms(t1.Sub(t0)))
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			return nil, errors.New("killed process not reaped within 10s")
		}
	}
	return lat, nil
}

// cutLatencies holds a connection from the device n times, cuts the
// service peer and measures until the service side reads a reset.
func (rx *reaction) cutLatencies(n int) ([]float64, error) {
	rx.hold.Store(true)
	defer rx.hold.Store(false)
	var lat []float64
	for range n {
		l, err := rx.cutOnce()
		if err != nil {
			return nil, err
		}
		lat = append(lat, l)
	}
	return lat, nil
}

func (rx *reaction) cutOnce() (float64, error) {
	cmd := rx.e.Worker(rx.device, "hold", deviceAddr, rx.target)
	out, err := cmd.StdoutPipe()
	if err != nil {
		return 0, err
	}
	if err := cmd.Start(); err != nil {
		return 0, err
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	if _, err := readyLine(out, 10*time.Second); err != nil {
		return 0, err
	}
	var peer net.Conn
	select {
	case peer = <-rx.held:
	case <-time.After(5 * time.Second):
		return 0, errors.New("held connection not accepted")
	}
	defer peer.Close()
	ended := make(chan error, 1)
	go func() { _, err := peer.Read(make([]byte, 1)); ended <- err }()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	t0 := time.Now()
	cut := &vigilpb.CutRequest{Agent: "laptop", Peer: rx.target, Reason: "benchmark"}
	if _, err := rx.srv.admin.Cut(ctx, cut); err != nil {
		return 0, fmt.Errorf("cut: %w", err)
	}
	var readErr error
	select {
	case readErr = <-ended:
	case <-time.After(5 * time.Second):
		return 0, errors.New("peer saw nothing within 5s of the cut")
	}
	t1 := time.Now()
	if !errors.Is(readErr, syscall.ECONNRESET) {
		return 0, fmt.Errorf("peer read ended with %v, want a reset", readErr)
	}
	restore := &vigilpb.RestoreRequest{Agent: "laptop", Peer: rx.target, Reason: "benchmark"}
	if _, err := rx.srv.admin.Restore(ctx, restore); err != nil {
		return 0, fmt.Errorf("restore: %w", err)
	}
	return ms(t1.Sub(t0)), nil
}
