package main

import (
	"fmt"
	"net/netip"
	"sort"
	"strings"

	"github.com/urfave/cli/v2"

	vigilpb "github.com/vigilsec/vigil/gen/vigil/v1"
)

func explainCommand() *cli.Command {
	return &cli.Command{
		Name:  "explain",
		Usage: "say whether a connection would be allowed, by which rule, levels and findings",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "agent", Usage: "the subject's agent `A` (required)"},
			&cli.UintFlag{Name: "pid", Usage: "the subject process `P` (required)"},
			&cli.StringFlag{Name: "dest", Usage: "destination `IP:PORT` (required)"},
			&cli.StringFlag{Name: "proto", Usage: "tcp or udp", Value: "tcp"},
			outputFlag,
		},
		Action: explain,
	}
}

// protocols are the values --proto accepts.
var protocols = map[string]vigilpb.Protocol{
	"tcp": vigilpb.Protocol_PROTOCOL_TCP,
	"udp": vigilpb.Protocol_PROTOCOL_UDP,
}

func explain(c *cli.Context) error {
	req, err := explainRequest(c)
	if err != nil {
		return err
	}
	asJSON, err := wantJSON(c)
	if err != nil {
		return err
	}
	resp, err := call(c, vigilpb.AdminServiceClient.Explain, req)
	if err != nil {
		return err
	}
	if asJSON {
		return writeJSON(c.App.Writer, resp)
	}
	return printExplanation(c, resp)
}

// explainRequest checks the flags and builds the request.
func explainRequest(c *cli.Context) (*vigilpb.ExplainRequest, error) {
	if err := requireFlags(c, "agent", "pid", "dest"); err != nil {
		return nil, err
	}
	dest, err := netip.ParseAddrPort(c.String("dest"))
	if err != nil {
		return nil, usageError{fmt.Sprintf("explain: --dest %q: want IP:PORT", c.String("dest"))}
	}
	proto, ok := protocols[c.String("proto")]
	if !ok {
		return nil, usageError{fmt.Sprintf("explain: --proto %q: want tcp or udp", c.String("proto"))}
	}
	return &vigilpb.ExplainRequest{
		Agent:       c.String("agent"),
		Pid:         uint32(c.Uint("pid")),
		Destination: dest.String(),
		Protocol:    proto,
	}, nil
}

func printExplanation(c *cli.Context, r *vigilpb.ExplainResponse) error {
	w := c.App.Writer
	fmt.Fprintf(w, "verdict:  %s\n", enumName(r.GetVerdict().String(), "VERDICT_"))
	fmt.Fprintf(w, "rule:     %s (id %d)\n", r.GetRule(), r.GetRuleId())
	if r.GetService() != "" {
		fmt.Fprintf(w, "service:  %s (requires %s)\n", r.GetService(), r.GetRequiredLevel())
	}
	if levels := r.GetSubjectLevels(); len(levels) > 0 {
		fmt.Fprintf(w, "levels:   %s\n", joinLevels(levels))
	}

	for i, reason := range r.GetReasons() {
		if i == 0 {
			fmt.Fprintln(w, "because:")
		}
		fmt.Fprintf(w, "  - %s\n", reason)
	}
	for i, f := range r.GetFindings() {
		if i == 0 {
			fmt.Fprintln(w, "findings:")
		}
		fmt.Fprintf(w, "  - %s %s %s: %s (from %s)\n", f.GetEntity(), f.GetSeverity(), f.GetDetector(),
			f.GetReason(), f.GetSource())
	}
	return nil
}

// joinLevels formats entity levels sorted by entity.
func joinLevels(levels map[string]string) string {
	names := make([]string, 0, len(levels))
	for n := range levels {
		names = append(names, n)
	}
	sort.Strings(names)
	parts := make([]string, len(names))
	for i, n := range names {
		parts[i] = n + " " + levels[n]
	}
	return strings.Join(parts, ", ")
}
