package main

import (
	"errors"
	"fmt"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/vigilsec/vigil/internal/ctlclient"
)

// usageError is a command line that cannot be run as written (exit 2).
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

// rejectedError is a request the server or the validator refused (exit 1).
// Its details are already printed; msg is the one-line summary.
type rejectedError struct{ msg string }

func (e rejectedError) Error() string { return e.msg }

// rpcError is an AdminService call that did not succeed.
type rpcError struct {
	err    error
	server string
}

func (e rpcError) Error() string { return e.err.Error() }

// classify returns the exit code and message for an error from the app.
func classify(err error) (int, string) {
	var (
		usage    usageError
		rejected rejectedError
		rpc      rpcError
		exitCode cli.ExitCoder
	)
	switch {
	case errors.As(err, &usage):
		return exitUsage, usage.msg
	case errors.As(err, &rejected):
		return exitRejected, rejected.msg
	case errors.As(err, &rpc):
		f := ctlclient.Describe(rpc.err, rpc.server)
		if f.Rejected {
			return exitRejected, f.Message
		}
		return exitOther, f.Message
	case errors.As(err, &exitCode):
		// urfave/cli reports an unknown command this way.
		return exitUsage, strings.ToLower(err.Error())
	case errors.Is(err, ctlclient.ErrNoCredentials):
		return exitUsage, err.Error()
	}
	return exitOther, err.Error()
}

// requireFlags returns a usage error naming the first of names not set.
func requireFlags(c *cli.Context, names ...string) error {
	for _, n := range names {
		if !c.IsSet(n) {
			return usageError{fmt.Sprintf("%s: --%s is required", commandName(c), n)}
		}
	}
	return nil
}

// requireArgs returns a usage error unless exactly n positional arguments
// were given.
func requireArgs(c *cli.Context, n int, what string) error {
	if c.NArg() != n {
		return usageError{fmt.Sprintf("%s: want %s", commandName(c), what)}
	}
	return nil
}

// commandName is the command's path below vigilctl, e.g. "agents revoke".
func commandName(c *cli.Context) string {
	return strings.TrimPrefix(c.Command.HelpName, c.App.Name+" ")
}
