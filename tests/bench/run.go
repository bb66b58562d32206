package bench

import (
	"fmt"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// Scenario is one measured scenario.
type Scenario struct {
	Name string // as -only selects it
	Run  func(*Env, *Report) error
}

// Scenarios are the scenarios of make bench, in the order they run.
var Scenarios = []Scenario{
	{"connect", ConnectOverhead},
	{"observe", ObserveOverhead},
	{"throughput", EventThroughput},
	{"reaction", Reaction},
	{"fanout", FanOut},
}

// Run runs the scenarios named in only (all when empty), each in its own
// Env that is closed before the next starts. A scenario that fails adds an
// unavailable row with its error and the run goes on.
func Run(newEnv func() (*Env, error), only []string, rep *Report) error {
	for _, name := range only {
		if !slices.ContainsFunc(Scenarios, func(sc Scenario) bool { return sc.Name == name }) {
			return fmt.Errorf("unknown scenario %q", name)
		}
	}
	describeMachine(rep, "start")
	defer describeMachine(rep, "end")
	for _, sc := range Scenarios {
		if len(only) > 0 && !slices.Contains(only, sc.Name) {
			continue
		}
		if err := runOne(sc, newEnv, rep); err != nil {
			return err
		}
	}
	return nil
}

// current is the Env of the running scenario, for Interrupt.
var current atomic.Pointer[Env]

// Interrupt cleans up after the running scenario, for a signal handler
// that exits next.
func Interrupt() {
	if e := current.Load(); e != nil {
		e.Close()
	}
}

func runOne(sc Scenario, newEnv func() (*Env, error), rep *Report) error {
	e, err := newEnv()
	if err != nil {
		return err
	}
	current.Store(e)
	defer func() { current.Store(nil); e.Close() }()

	start := time.Now()
	e.Log.Info("scenario start", "scenario", sc.Name)
	if err := sc.Run(e, rep); err != nil {
		e.Log.Error("scenario failed", "scenario", sc.Name, "err", err)
		rep.Unavailable(sc.Name, "-", "-", fmt.Sprintf("scenario failed: %v", err))
	}
	e.Log.Info("scenario done", "scenario", sc.Name, "took", time.Since(start).Round(time.Millisecond))
	return nil
}

// describeMachine notes the CPU count, the kernel and the load average at
// a point of the run: other work on the machine is the noise every ratio
// carries.
func describeMachine(rep *Report, when string) {
	rep.Note("cpus", strconv.Itoa(runtime.NumCPU()))
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		rep.Note("kernel", strings.TrimSpace(string(b)))
	}
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		f := strings.Fields(string(b))
		if len(f) >= 3 {
			rep.Note("load average at "+when, strings.Join(f[:3], " "))
		}
	}
}
