package main

import (
	"fmt"
	"net/netip"
	"slices"
	"time"

	"github.com/urfave/cli/v2"

	vigilpb "github.com/vigilsec/vigil/gen/vigil/v1"
)

// severities are the values --severity accepts.
var severities = []string{"info", "low", "medium", "high", "critical"}

func killCommand() *cli.Command {
	return &cli.Command{
		Name:  "kill",
		Usage: "kill a process on an agent (and, with --tree, its descendants)",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "agent", Usage: "agent `A` (required)"},
			&cli.UintFlag{Name: "pid", Usage: "process `P` (required)"},
			&cli.BoolFlag{Name: "tree", Usage: "also kill descendants, including those forked meanwhile"},
			&cli.StringFlag{Name: "reason", Usage: "recorded with the instruction"},
			outputFlag,
		},
		Action: kill,
	}
}

func cutCommand() *cli.Command {
	return &cli.Command{
		Name:   "cut",
		Usage:  "cut an agent's connections to a peer and block it until restore",
		Flags:  peerFlags(),
		Action: cut,
	}
}

func restoreCommand() *cli.Command {
	return &cli.Command{
		Name:   "restore",
		Usage:  "lift a cut",
		Flags:  peerFlags(),
		Action: restore,
	}
}

func peerFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "agent", Usage: "agent `A` (required)"},
		&cli.StringFlag{Name: "peer", Usage: "peer `IP[:PORT]` (required)"},
		&cli.StringFlag{Name: "reason", Usage: "recorded with the instruction"},
		outputFlag,
	}
}

func reportCommand() *cli.Command {
	return &cli.Command{
		Name:  "report",
		Usage: "record a result from an existing security system",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "entity", Usage: "entity `E` as KIND/NAME (required)"},
			&cli.StringFlag{Name: "level", Usage: "level `L` the result sets (required)"},
			&cli.StringFlag{Name: "source", Usage: "reporting system `S` (required)"},
			&cli.StringFlag{Name: "reason", Usage: "explanation `R` (required)"},
			&cli.StringFlag{Name: "severity", Usage: "info, low, medium, high or critical"},
			&cli.DurationFlag{Name: "ttl", Usage: "how long the result stays in force, e.g. 1h (default: until replaced)"},
			outputFlag,
		},
		Action: report,
	}
}

func kill(c *cli.Context) error {
	if err := requireFlags(c, "agent", "pid"); err != nil {
		return err
	}
	req := &vigilpb.KillRequest{
		Agent:  c.String("agent"),
		Pid:    uint32(c.Uint("pid")),
		Tree:   c.Bool("tree"),
		Reason: c.String("reason"),
	}
	what := fmt.Sprintf("kill pid %d on %s", req.Pid, req.Agent)
	return instruct(c, what, func() (*vigilpb.InstructionResponse, error) {
		return call(c, vigilpb.AdminServiceClient.Kill, req)
	})
}

func cut(c *cli.Context) error {
	agent, peer, err := peerArgs(c)
	if err != nil {
		return err
	}
	req := &vigilpb.CutRequest{Agent: agent, Peer: peer, Reason: c.String("reason")}
	return instruct(c, "cut "+peer+" on "+agent, func() (*vigilpb.InstructionResponse, error) {
		return call(c, vigilpb.AdminServiceClient.Cut, req)
	})
}

func restore(c *cli.Context) error {
	agent, peer, err := peerArgs(c)
	if err != nil {
		return err
	}
	req := &vigilpb.RestoreRequest{Agent: agent, Peer: peer, Reason: c.String("reason")}
	return instruct(c, "restore "+peer+" on "+agent, func() (*vigilpb.InstructionResponse, error) {
		return call(c, vigilpb.AdminServiceClient.Restore, req)
	})
}

// peerArgs checks --agent and --peer and returns the peer normalized as
// "IP" or "IP:PORT" (IPv6 with a port in brackets).
func peerArgs(c *cli.Context) (agent, peer string, err error) {
	if err := requireFlags(c, "agent", "peer"); err != nil {
		return "", "", err
	}
	raw := c.String("peer")
	if a, err := netip.ParseAddr(raw); err == nil {
		return c.String("agent"), a.String(), nil
	}
	if ap, err := netip.ParseAddrPort(raw); err == nil {
		return c.String("agent"), ap.String(), nil
	}
	return "", "", usageError{fmt.Sprintf("%s: --peer %q: want IP or IP:PORT", c.Command.Name, raw)}
}

// instruct sends one instruction and prints its outcome. A failed or
// targetless instruction is a rejection; an unacknowledged one is queued
// and delivered when the agent is back, which is not an error.
func instruct(c *cli.Context, what string, send func() (*vigilpb.InstructionResponse, error)) error {
	asJSON, err := wantJSON(c)
	if err != nil {
		return err
	}
	resp, err := send()
	if err != nil {
		return err
	}
	if asJSON {
		if err := writeJSON(c.App.Writer, resp); err != nil {
			return err
		}
	}
	return instructionOutcome(c, what, resp, asJSON)
}

func instructionOutcome(c *cli.Context, what string, r *vigilpb.InstructionResponse, quiet bool) error {
	switch r.GetOutcome() {
	case vigilpb.InstructionOutcome_INSTRUCTION_OUTCOME_DONE:
		if !quiet {
			latency := time.Duration(r.GetLatencyUs()) * time.Microsecond
			fmt.Fprintf(c.App.Writer, "%s: done (instruction %d, %s)\n", what, r.GetSeq(), latency)
		}
		return nil
	case vigilpb.InstructionOutcome_INSTRUCTION_OUTCOME_NOT_FOUND:
		return rejectedError{fmt.Sprintf("%s: target not found (instruction %d)", what, r.GetSeq())}
	case vigilpb.InstructionOutcome_INSTRUCTION_OUTCOME_FAILED:
		return rejectedError{fmt.Sprintf("%s: failed (instruction %d): %s", what, r.GetSeq(), r.GetError())}
	}
	if !quiet {
		fmt.Fprintf(c.App.Writer, "%s: queued as instruction %d; the agent has not acknowledged it yet\n", what, r.GetSeq())
	}
	return nil
}

func report(c *cli.Context) error {
	if err := requireFlags(c, "entity", "level", "source", "reason"); err != nil {
		return err
	}
	if sev := c.String("severity"); sev != "" && !slices.Contains(severities, sev) {
		return usageError{fmt.Sprintf("report: --severity %q: want info, low, medium, high or critical", sev)}
	}
	if c.Duration("ttl") < 0 {
		return usageError{"report: --ttl must not be negative"}
	}
	asJSON, err := wantJSON(c)
	if err != nil {
		return err
	}

	resp, err := call(c, vigilpb.AdminServiceClient.Report, &vigilpb.ReportRequest{
		Entity:     c.String("entity"),
		Level:      c.String("level"),
		Source:     c.String("source"),
		Reason:     c.String("reason"),
		Severity:   c.String("severity"),
		TtlSeconds: uint64(c.Duration("ttl").Seconds()),
	})
	if err != nil {
		return err
	}

	if asJSON {
		return writeJSON(c.App.Writer, resp)
	}
	_, err = fmt.Fprintf(c.App.Writer, "%s: level %s\n", c.String("entity"), resp.GetLevel())
	return err
}
