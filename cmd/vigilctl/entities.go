package main

import (
	"fmt"
	"slices"
	"strings"

	"github.com/urfave/cli/v2"

	vigilpb "github.com/vigilsec/vigil/gen/vigil/v1"
)

// entityKinds are the kinds ListEntities filters by.
var entityKinds = []string{"user", "device", "service", "process"}

func entitiesCommand() *cli.Command {
	return &cli.Command{
		Name:  "entities",
		Usage: "users, devices, services, processes and their levels",
		Subcommands: []*cli.Command{{
			Name:  "list",
			Usage: "list entities with their levels and the findings behind them",
			Flags: []cli.Flag{
				&cli.StringFlag{Name: "kind", Usage: "only `K`: " + strings.Join(entityKinds, ", ")},
				outputFlag,
			},
			Action: entitiesList,
		}},
	}
}

func entitiesList(c *cli.Context) error {
	asJSON, err := wantJSON(c)
	if err != nil {
		return err
	}
	kind := c.String("kind")
	if kind != "" && !slices.Contains(entityKinds, kind) {
		return usageError{fmt.Sprintf("entities list: unknown kind %q (want %s)", kind, strings.Join(entityKinds, ", "))}
	}
	resp, err := call(c, vigilpb.AdminServiceClient.ListEntities, &vigilpb.ListEntitiesRequest{Kind: kind})
	if err != nil {
		return err
	}

	if asJSON {
		return writeJSON(c.App.Writer, resp)
	}
	t := newTable(c.App.Writer, "ENTITY", "LEVEL", "SINCE", "FINDINGS")
	for _, e := range resp.GetEntities() {
		t.row(e.GetName(), e.GetLevel(), unixTime(e.GetUpdatedUnix()), findingSummary(e.GetFindings()))
	}
	return t.flush()
}

// findingSummary joins findings as "detector: reason" for a table cell.
func findingSummary(fs []*vigilpb.Finding) string {
	parts := make([]string, 0, len(fs))
	for _, f := range fs {
		parts = append(parts, f.GetDetector()+": "+f.GetReason())
	}
	return strings.Join(parts, "; ")
}
