package main

import (
	"fmt"

	"github.com/urfave/cli/v2"

	vigilpb "github.com/vigilsec/vigil/gen/vigil/v1"
)

func tokenCommand() *cli.Command {
	return &cli.Command{
		Name:  "token",
		Usage: "manage enrollment tokens",
		Subcommands: []*cli.Command{{
			Name:  "create",
			Usage: "print a one-time enrollment token",
			Flags: []cli.Flag{
				&cli.DurationFlag{Name: "ttl", Usage: "validity, e.g. 10m (default: the server's)"},
				outputFlag,
			},
			Action: tokenCreate,
		}},
	}
}

func tokenCreate(c *cli.Context) error {
	asJSON, err := wantJSON(c)
	if err != nil {
		return err
	}
	if c.Duration("ttl") < 0 {
		return usageError{"token create: --ttl must not be negative"}
	}
	req := &vigilpb.CreateTokenRequest{TtlSeconds: uint64(c.Duration("ttl").Seconds())}
	resp, err := call(c, vigilpb.AdminServiceClient.CreateToken, req)
	if err != nil {
		return err
	}

	if asJSON {
		return writeJSON(c.App.Writer, resp)
	}
	_, err = fmt.Fprintln(c.App.Writer, resp.GetToken())
	return err
}
