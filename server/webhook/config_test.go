package webhook

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/urfave/cli/v2"
)

func TestReadSecret(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name    string
		content string
		mode    os.FileMode
		want    string
		err     string
	}{
		{name: "trimmed", content: "  0123456789abcdef\n", mode: 0o600, want: "0123456789abcdef"},
		{name: "world readable", content: "0123456789abcdef", mode: 0o644, err: "other users"},
		{name: "short", content: "short\n", mode: 0o600, err: "want at least 16"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(dir, tt.name)
			if err := os.WriteFile(path, []byte(tt.content), tt.mode); err != nil {
				t.Fatal(err)
			}
			os.Chmod(path, tt.mode)
			got, err := ReadSecret(path)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("err = %v, want %q", err, tt.err)
				}
				return
			}
			if err != nil || string(got) != tt.want {
				t.Fatalf("got %q, %v", got, err)
			}
		})
	}
	if _, err := ReadSecret(filepath.Join(dir, "missing")); err == nil {
		t.Fatal("missing file accepted")
	}
}

func TestFromFlags(t *testing.T) {
	run := func(args ...string) (Config, error) {
		var cfg Config
		var ferr error
		app := &cli.App{Flags: Flags(), Action: func(c *cli.Context) error {
			cfg, ferr = FromFlags(c)
			return nil
		}}
		if err := app.Run(append([]string{"vigil-server"}, args...)); err != nil {
			t.Fatal(err)
		}
		return cfg, ferr
	}
	cfg, err := run("--webhook-listen", "127.0.0.1:9443", "--webhook-secret-file", "/s", "--webhook-window", "1m")
	if err != nil || cfg.Listen != "127.0.0.1:9443" || cfg.SecretFile != "/s" ||
		cfg.Options().Window.Minutes() != 1 || cfg.Options().MaxBody != DefaultMaxBody {
		t.Fatalf("cfg %+v, %v", cfg, err)
	}
	if _, err := run("--webhook-listen", "127.0.0.1:9443"); err == nil {
		t.Fatal("listen without a secret accepted")
	}
}
