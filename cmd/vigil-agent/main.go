// Command vigil-agent enforces Vigil's verdicts on one host (or one cgroup
// scope of it): it enrolls with the server, loads the eBPF data plane,
// streams what it observes and carries out what the server decides. See
// `vigil-agent --help`.
package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/urfave/cli/v2"
	"github.com/vigilsec/vigil/agent"
	"github.com/vigilsec/vigil/agent/dataplane"
	"github.com/vigilsec/vigil/agent/spool"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	if err := newApp().Run(os.Args); err != nil {
		fmt.Fprintln(os.Stderr, "vigil-agent:", err)
		os.Exit(1)
	}
}

func newApp() *cli.App {
	return &cli.App{
		Name:            "vigil-agent",
		Usage:           "enforce Vigil's verdicts in this host's kernel and report what happens",
		Version:         version,
		Flags:           flags(),
		Action:          run,
		HideHelpCommand: true,
		UsageText: "vigil-agent --server ADDR --token TOKEN --data-dir DIR [--name NAME] [--cgroup PATH] [--metrics ADDR] [--address IP ...]\n" +
			"vigil-agent --cleanup [--cgroup PATH]",
	}
}

func flags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "server", Value: "127.0.0.1:7443", EnvVars: []string{"VIGIL_SERVER"}, Usage: "server address `HOST:PORT`"},
		&cli.StringFlag{Name: "token", EnvVars: []string{"VIGIL_TOKEN"}, Usage: "one-time enrollment `TOKEN` (vgl1.…), needed on first start only"},
		&cli.StringFlag{Name: "data-dir", Usage: "`DIR` for the identity, event spool and state (created 0700)"},
		&cli.StringFlag{Name: "name", Usage: "agent `NAME` (device/NAME); defaults to the hostname"},
		&cli.StringFlag{Name: "cgroup", Value: dataplane.DefaultCgroupRoot, Usage: "cgroup v2 `PATH` of the scope to protect"},
		&cli.StringFlag{Name: "metrics", Usage: "serve Prometheus metrics on `ADDR` (default off)"},
		&cli.StringSliceFlag{Name: "address", Usage: "report `IP` as this host's address instead of the interfaces' (repeatable)"},
		&cli.Int64Flag{Name: "spool-limit", Value: spool.DefaultLimit, Usage: "largest on-disk event spool in `BYTES`; the oldest events are dropped and counted beyond it"},
		&cli.BoolFlag{Name: "cleanup", Usage: "remove this scope's pinned programs and maps, then exit"},
		&cli.BoolFlag{Name: "cleanup-on-exit", Usage: "remove the pins when stopping (by default enforcement continues after exit)"},
		&cli.StringFlag{Name: "log-level", Value: "info", Usage: "log `LEVEL`: debug, info, warn or error"},
	}
}

func run(c *cli.Context) error {
	// Logging: structured, to stderr.
	var level slog.Level
	if err := level.UnmarshalText([]byte(c.String("log-level"))); err != nil {
		return fmt.Errorf("--log-level: %w", err)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))

	// --cleanup removes the scope's pins and stops there.
	if c.Bool("cleanup") {
		pins := dataplane.PinPathFor(c.String("cgroup"))
		if err := dataplane.Cleanup(pins); err != nil {
			return err
		}
		log.Info("pins removed", "path", pins)
		return nil
	}
	if c.String("data-dir") == "" {
		return fmt.Errorf("--data-dir is required")
	}

	// SIGINT and SIGTERM stop the agent; the pins stay unless asked.
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	return agent.Run(ctx, agent.Config{
		Server: c.String("server"), Token: c.String("token"), DataDir: c.String("data-dir"),
		Name: c.String("name"), Cgroup: c.String("cgroup"), MetricsAddr: c.String("metrics"),
		Addresses: c.StringSlice("address"), SpoolLimit: c.Int64("spool-limit"),
		Version: version, CleanupOnExit: c.Bool("cleanup-on-exit"), Logger: log,
	})
}
