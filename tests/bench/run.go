package bench

import (
	"fmt"
	"slices"
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
	for _, sc := range Scenarios {
		if len(only) > 0 && !slices.Contains(only, sc.Name) {
			continue
		}
		e, err := newEnv()
		if err != nil {
			return err
		}
		start := time.Now()
		e.Log.Info("scenario start", "scenario", sc.Name)
		err = sc.Run(e, rep)
		e.Close()
		if err != nil {
			e.Log.Error("scenario failed", "scenario", sc.Name, "err", err)
			rep.Unavailable(sc.Name, "-", "-", fmt.Sprintf("scenario failed: %v", err))
		}
		e.Log.Info("scenario done", "scenario", sc.Name, "took", time.Since(start).Round(time.Millisecond))
	}
	return nil
}
