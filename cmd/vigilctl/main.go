// Command vigilctl is the operator's tool for Vigil: it creates enrollment
// tokens, lists agents and entities, validates and applies policies, shows
// the access log, explains verdicts, and kills, cuts, restores and reports
// through the server's AdminService. It holds one gRPC connection per
// invocation; `policy validate` runs offline.
//
// Exit codes: 0 ok, 1 rejected or invalid, 2 usage, 3 unreachable or other.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/urfave/cli/v2"

	"github.com/vigilsec/vigil/internal/ctlclient"
)

// Exit codes.
const (
	exitOK       = 0
	exitRejected = 1
	exitUsage    = 2
	exitOther    = 3
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run executes one vigilctl invocation and returns its exit code.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	app := newApp(stdout, stderr)
	err := app.RunContext(ctx, args)
	if err == nil {
		return exitOK
	}

	code, msg := classify(err)
	fmt.Fprintf(stderr, "vigilctl: %s\n", msg)
	if code == exitUsage {
		fmt.Fprintln(stderr, "run 'vigilctl help' for usage")
	}
	return code
}

// newApp builds the command tree writing to stdout and stderr.
func newApp(stdout, stderr io.Writer) *cli.App {
	app := &cli.App{
		Name:                 "vigilctl",
		Usage:                "operate a Vigil server",
		Writer:               stdout,
		ErrWriter:            stderr,
		EnableBashCompletion: true,
		HideVersion:          true,
		Flags: []cli.Flag{
			&cli.StringFlag{
				Name:    "server",
				Usage:   "server address `ADDR`",
				Value:   ctlclient.DefaultServer,
				EnvVars: []string{"VIGIL_SERVER"},
			},
			&cli.StringFlag{
				Name: "credentials",
				Usage: "`DIR` holding ca.crt, admin.crt and admin.key " +
					"(default " + ctlclient.DefaultCredentialsDir + " when it exists)",
				EnvVars: []string{"VIGIL_CREDENTIALS"},
			},
		},
		Commands: []*cli.Command{
			tokenCommand(),
			agentsCommand(),
			entitiesCommand(),
			policyCommand(),
			eventsCommand(),
			explainCommand(),
			killCommand(),
			cutCommand(),
			restoreCommand(),
			reportCommand(),
		},
		ExitErrHandler: func(*cli.Context, error) {},
	}
	app.OnUsageError = onUsageError
	for _, c := range app.Commands {
		setUsageHandler(c)
	}
	return app
}

// setUsageHandler makes flag errors in c and its subcommands usage errors.
func setUsageHandler(c *cli.Command) {
	c.OnUsageError = onUsageError
	for _, sub := range c.Subcommands {
		setUsageHandler(sub)
	}
}

func onUsageError(_ *cli.Context, err error, _ bool) error {
	return usageError{err.Error()}
}
