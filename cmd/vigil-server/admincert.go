package main

import (
	"fmt"

	"github.com/urfave/cli/v2"

	"github.com/vigilsec/vigil/server/pki"
)

func adminCertCommand() *cli.Command {
	return &cli.Command{
		Name:  "admin-cert",
		Usage: "issue an admin client certificate for vigilctl",
		Description: "Writes ca.crt, admin.crt and admin.key into --out. The role decides what\n" +
			"vigilctl may do: viewer reads; operator also kills, cuts, restores, reports\n" +
			"and creates tokens; admin also applies policy and revokes agents.",
		Flags: []cli.Flag{
			dataDirFlag(),
			&cli.StringFlag{Name: "role", Required: true, Usage: "`ROLE`: viewer, operator or admin"},
			&cli.StringFlag{Name: "name", Value: "admin", Usage: "`NAME` recorded in the audit log"},
			&cli.StringFlag{Name: "out", Required: true, Usage: "`DIR` to write the credentials to (created 0700)"},
		},
		Action: func(c *cli.Context) error {
			role, err := pki.ParseRole(c.String("role"))
			if err != nil {
				return err
			}
			ca, err := pki.Open(c.String("data-dir"))
			if err != nil {
				return err
			}
			if err := ca.IssueAdmin(role, c.String("name"), c.String("out")); err != nil {
				return err
			}
			fmt.Printf("wrote %s credentials to %s\n", role, c.String("out"))
			return nil
		},
	}
}
