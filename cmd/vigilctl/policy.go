package main

import (
	"fmt"
	"io"
	"os"

	"github.com/urfave/cli/v2"

	vigilpb "github.com/vigilsec/vigil/gen/vigil/v1"
)

func policyCommand() *cli.Command {
	fileFlag := &cli.PathFlag{Name: "file", Aliases: []string{"f"}, Usage: "policy `FILE` (required)"}
	return &cli.Command{
		Name:  "policy",
		Usage: "validate, apply and inspect policies",
		Subcommands: []*cli.Command{
			{
				Name:   "validate",
				Usage:  "check a policy offline; errors print as FILE:LINE:COL: message",
				Flags:  []cli.Flag{fileFlag},
				Action: policyValidate,
			},
			{
				Name:   "apply",
				Usage:  "validate, store and push a policy; prints the new version",
				Flags:  []cli.Flag{fileFlag, outputFlag},
				Action: policyApply,
			},
			{
				Name:   "get",
				Usage:  "print the running policy or a past version",
				Flags:  []cli.Flag{&cli.Uint64Flag{Name: "version", Usage: "version `N` (default: running)"}, outputFlag},
				Action: policyGet,
			},
			{
				Name:   "history",
				Usage:  "list stored policy versions, newest first",
				Flags:  []cli.Flag{outputFlag},
				Action: policyHistory,
			},
		},
	}
}

// readPolicyFile returns the document named by --file.
func readPolicyFile(c *cli.Context) (*vigilpb.PolicyDocument, error) {
	if err := requireFlags(c, "file"); err != nil {
		return nil, err
	}
	name := c.Path("file")
	src, err := os.ReadFile(name)
	if err != nil {
		return nil, fmt.Errorf("read policy: %w", err)
	}
	return &vigilpb.PolicyDocument{Filename: name, Yaml: string(src)}, nil
}

func policyApply(c *cli.Context) error {
	asJSON, err := wantJSON(c)
	if err != nil {
		return err
	}
	doc, err := readPolicyFile(c)
	if err != nil {
		return err
	}
	resp, err := call(c, vigilpb.AdminServiceClient.ApplyPolicy, &vigilpb.ApplyPolicyRequest{Document: doc})
	if err != nil {
		return err
	}
	return printApplied(c, resp, asJSON)
}

// printApplied prints the new version, or the errors that rejected the
// policy (then the result is a rejection).
func printApplied(c *cli.Context, resp *vigilpb.ApplyPolicyResponse, asJSON bool) error {
	if asJSON {
		if err := writeJSON(c.App.Writer, resp); err != nil {
			return err
		}
	}
	if errs := resp.GetErrors(); len(errs) > 0 {
		if !asJSON {
			printPolicyErrors(c.App.ErrWriter, errs)
		}
		return rejectedError{fmt.Sprintf("policy rejected with %d error(s); the running policy is unchanged", len(errs))}
	}
	if asJSON {
		return nil
	}
	_, err := fmt.Fprintf(c.App.Writer, "policy version %d applied\n", resp.GetVersion())
	return err
}

// printPolicyErrors prints errors as FILE:LINE:COL: FIELD: MESSAGE.
func printPolicyErrors(w io.Writer, errs []*vigilpb.PolicyError) {
	for _, e := range errs {
		pos := fmt.Sprintf("%s:%d:%d", e.GetFilename(), e.GetLine(), e.GetColumn())
		if e.GetField() != "" {
			fmt.Fprintf(w, "%s: %s: %s\n", pos, e.GetField(), e.GetMessage())
			continue
		}
		fmt.Fprintf(w, "%s: %s\n", pos, e.GetMessage())
	}
}

func policyGet(c *cli.Context) error {
	asJSON, err := wantJSON(c)
	if err != nil {
		return err
	}
	resp, err := call(c, vigilpb.AdminServiceClient.GetPolicy, &vigilpb.GetPolicyRequest{Version: c.Uint64("version")})
	if err != nil {
		return err
	}

	if asJSON {
		return writeJSON(c.App.Writer, resp)
	}
	w := c.App.Writer
	fmt.Fprintf(w, "# version %d from %s, applied %s by %s\n", resp.GetVersion(),
		resp.GetDocument().GetFilename(), unixTime(resp.GetAppliedUnix()), resp.GetAppliedBy())
	_, err = io.WriteString(w, resp.GetDocument().GetYaml())
	return err
}

func policyHistory(c *cli.Context) error {
	asJSON, err := wantJSON(c)
	if err != nil {
		return err
	}
	resp, err := call(c, vigilpb.AdminServiceClient.PolicyHistory, &vigilpb.PolicyHistoryRequest{})
	if err != nil {
		return err
	}

	if asJSON {
		return writeJSON(c.App.Writer, resp)
	}
	t := newTable(c.App.Writer, "VERSION", "APPLIED", "BY", "FILE")
	for _, p := range resp.GetPolicies() {
		t.row(fmt.Sprint(p.GetVersion()), unixTime(p.GetAppliedUnix()), p.GetAppliedBy(), p.GetDocument().GetFilename())
	}
	return t.flush()
}
