package main

import (
	"bytes"
	"strings"
	"testing"

	"github.com/urfave/cli/v2"
)

func TestHelpDocumentsEveryFlag(t *testing.T) {
	app := newApp()
	var out bytes.Buffer
	app.Writer = &out
	if err := app.Run([]string{"vigil-agent", "--help"}); err != nil {
		t.Fatal(err)
	}
	help := out.String()

	for _, f := range app.Flags {
		name := f.Names()[0]
		usage := f.(cli.DocGenerationFlag).GetUsage()
		if usage == "" {
			t.Errorf("flag --%s has no usage text", name)
		}
		if !strings.Contains(help, "--"+name) {
			t.Errorf("--help does not mention --%s", name)
		}
	}
	for _, want := range []string{"--server", "--token", "--data-dir", "--name", "--cgroup", "--metrics", "--address", "--cleanup", "--cleanup-on-exit", "127.0.0.1:7443"} {
		if !strings.Contains(help, want) {
			t.Errorf("--help lacks %q", want)
		}
	}
}

func TestUsageErrors(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"no data dir", []string{"vigil-agent", "--token", "x"}, "--data-dir is required"},
		{"bad log level", []string{"vigil-agent", "--log-level", "loud"}, "--log-level"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			app := newApp()
			app.Writer = &bytes.Buffer{}
			err := app.Run(tt.args)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Run(%v) = %v, want error containing %q", tt.args, err, tt.want)
			}
		})
	}
}
