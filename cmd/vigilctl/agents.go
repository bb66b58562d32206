package main

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/urfave/cli/v2"

	vigilpb "github.com/vigilsec/vigil/gen/vigil/v1"
)

func agentsCommand() *cli.Command {
	return &cli.Command{
		Name:  "agents",
		Usage: "list and revoke enrolled agents",
		Subcommands: []*cli.Command{
			{
				Name:   "list",
				Usage:  "agents, state, enforcement capabilities, level",
				Flags:  []cli.Flag{outputFlag},
				Action: agentsList,
			},
			{
				Name:      "revoke",
				Usage:     "revoke an agent's certificate and close its stream",
				ArgsUsage: "NAME",
				Action:    agentsRevoke,
			},
		},
	}
}

func agentsList(c *cli.Context) error {
	asJSON, err := wantJSON(c)
	if err != nil {
		return err
	}
	resp, err := call(c, vigilpb.AdminServiceClient.ListAgents, &vigilpb.ListAgentsRequest{})
	if err != nil {
		return err
	}

	if asJSON {
		return writeJSON(c.App.Writer, resp)
	}
	t := newTable(c.App.Writer, "NAME", "STATE", "LEVEL", "TABLE", "ENFORCEMENT", "EXEC", "SCOPE", "LAST SEEN")
	for _, a := range resp.GetAgents() {
		caps := a.GetCapabilities()
		t.row(a.GetName(), agentState(a), a.GetLevel(), strconv.FormatUint(a.GetTableVersion(), 10),
			strings.Join(caps.GetEnforcement(), ","), caps.GetExecEnforcement(), a.GetScope(),
			unixTime(a.GetLastSeenUnix()))
	}
	return t.flush()
}

func agentState(a *vigilpb.Agent) string {
	switch {
	case a.GetRevoked():
		return "revoked"
	case a.GetOnline():
		return "online"
	}
	return "offline"
}

func agentsRevoke(c *cli.Context) error {
	if err := requireArgs(c, 1, "one agent NAME"); err != nil {
		return err
	}
	name := c.Args().First()
	req := &vigilpb.RevokeAgentRequest{Name: name}
	if _, err := call(c, vigilpb.AdminServiceClient.RevokeAgent, req); err != nil {
		return err
	}
	_, err := fmt.Fprintf(c.App.Writer, "revoked %s\n", name)
	return err
}
