// Command vigil-server is Vigil's decision server: it enrolls agents, holds
// their mutual-TLS streams, stores events, instructions and the audit log in
// badger, runs the decision engine and serves vigilctl. Its integrate
// interface loads threat-intel feeds, takes signed results from existing
// systems over HTTPS and exports every stored event as OCSF. It only reads
// flags and wires the server packages together.
package main

import (
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/urfave/cli/v2"
)

func main() {
	if err := newApp().Run(os.Args); err != nil {
		fmt.Fprintln(os.Stderr, "vigil-server:", err)
		os.Exit(1)
	}
}

// newApp returns the command line: serve by default, and admin-cert.
func newApp() *cli.App {
	return &cli.App{
		Name:  "vigil-server",
		Usage: "Vigil's decision server (gRPC over mutual TLS)",
		Description: "At first start vigil-server creates its CA, its server certificate and an\n" +
			"admin client certificate in DIR/admin/{ca.crt,admin.crt,admin.key}, which\n" +
			"vigilctl loads with --credentials DIR/admin.",
		Flags:    serveFlags(),
		Action:   serve,
		Commands: []*cli.Command{adminCertCommand()},
	}
}

func serveFlags() []cli.Flag {
	return append([]cli.Flag{
		// Not marked required here: urfave/cli would then demand it of the
		// subcommands too; serve checks it.
		&cli.StringFlag{Name: "data-dir", EnvVars: []string{"VIGIL_DATA_DIR"},
			Usage: "`DIR` for the CA, certificates and database (created 0700; required)"},
		&cli.StringFlag{Name: "listen", Value: "127.0.0.1:7443", EnvVars: []string{"VIGIL_LISTEN"},
			Usage: "`ADDR` to serve gRPC on (mutual TLS)"},
		&cli.StringFlag{Name: "metrics", EnvVars: []string{"VIGIL_METRICS"},
			Usage: "`ADDR` to serve Prometheus metrics on at /metrics (empty: off)"},
		&cli.StringSliceFlag{Name: "host",
			Usage: "extra DNS name or IP `HOST` for the server certificate " +
				"(repeatable; localhost, 127.0.0.1 and ::1 are always in)"},
		&cli.DurationFlag{Name: "token-ttl", Value: time.Hour,
			Usage: "default lifetime of enrollment tokens"},
		&cli.DurationFlag{Name: "event-max-age", Value: 30 * 24 * time.Hour,
			Usage: "drop stored events older than this (0: keep)"},
		&cli.Int64Flag{Name: "event-max-bytes", Value: 4 << 30,
			Usage: "drop the oldest stored events while the event log is larger (0: no bound)"},
		&cli.StringFlag{Name: "log-level", Value: "info",
			Usage: "log level: debug, info, warn or error"},
	}, integrationFlags()...)
}

func dataDirFlag() cli.Flag {
	return &cli.StringFlag{Name: "data-dir", Required: true, EnvVars: []string{"VIGIL_DATA_DIR"},
		Usage: "`DIR` for the CA, certificates and database (created 0700)"}
}

func newLogger(level string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level: %w", err)
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: l})), nil
}
