package main

import (
	"fmt"
	"os"

	"github.com/urfave/cli/v2"

	"github.com/vigilsec/vigil/policy"
)

// policyValidate checks a policy offline with the same parser the server
// uses; it needs no server and no credentials.
func policyValidate(c *cli.Context) error {
	if err := requireFlags(c, "file"); err != nil {
		return err
	}
	name := c.Path("file")
	src, err := os.ReadFile(name)
	if err != nil {
		return fmt.Errorf("read policy: %w", err)
	}

	_, errs := policy.Parse(name, src)
	for _, e := range errs {
		fmt.Fprintln(c.App.ErrWriter, e.Error())
	}
	if len(errs) > 0 {
		return rejectedError{fmt.Sprintf("%s: %d error(s)", name, len(errs))}
	}
	_, err = fmt.Fprintf(c.App.Writer, "%s: valid\n", name)
	return err
}
