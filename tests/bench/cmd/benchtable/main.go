// Command benchtable runs Vigil's benchmark scenarios (make bench) as root:
// connect overhead against no agent and nftables, exec and connect
// observation against auditd, event throughput, reaction latency and server
// fan-out. It prints a table of medians and ratios measured side by side in
// this run and writes the rows to tests/bench/results.json. It exits 1 when
// a target is missed.
package main

import (
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/vigilsec/vigil/tests/bench"
)

func main() {
	// Workers are this program re-executed inside a scope.
	bench.MaybeRunWorker()

	only := flag.String("only", "", "comma-separated `SCENARIOS` to run (default all)")
	quick := flag.Bool("quick", false, "fewer rounds and smaller samples")
	out := flag.String("out", "tests/bench/results.json", "results `FILE` (JSON)")
	md := flag.Bool("markdown", false, "also print the table as Markdown")
	bin := flag.String("bin", "bin", "`DIR` with the built binaries (make build)")
	keep := flag.Bool("keep", false, "keep the servers' and agents' data directories and logs")
	flag.Parse()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))

	if err := run(log, *only, *quick, *out, *md, *bin, *keep); err != nil {
		log.Error("benchtable", "err", err)
		os.Exit(2)
	}
}

func run(log *slog.Logger, only string, quick bool, out string, md bool, bin string, keep bool) error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("benchmarks need root (BPF, cgroups, network namespaces)")
	}
	// The fan-out scenario holds a socket per simulated agent.
	limit, err := bench.RaiseFileLimit(1 << 18)
	if err != nil {
		return err
	}
	log.Info("open file limit", "nofile", limit)
	var names []string
	if only != "" {
		names = strings.Split(only, ",")
	}

	// An interrupt still removes what the running scenario set up.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		sig := <-sigs
		log.Warn("interrupted, cleaning up", "signal", sig.String())
		bench.Interrupt()
		os.Exit(130)
	}()

	// Scenarios: each in its own environment, cleaned up before the next.
	rep := &bench.Report{}
	newEnv := func() (*bench.Env, error) {
		e, err := bench.NewEnv(log, bin, quick)
		if e != nil {
			e.Keep = keep
		}
		return e, err
	}
	if err := bench.Run(newEnv, names, rep); err != nil {
		return err
	}

	// Output: the table, optionally Markdown, and the JSON file.
	if err := rep.WriteTable(os.Stdout); err != nil {
		return err
	}
	if md {
		fmt.Println()
		rep.WriteMarkdown(os.Stdout)
	}
	if err := rep.WriteJSON(out); err != nil {
		return err
	}
	if rep.Failed() {
		os.Exit(1)
	}
	return nil
}
