package webhook

import (
	"bytes"
	"fmt"
	"os"
	"time"

	"github.com/urfave/cli/v2"
)

// Config is the external-results part of the server's configuration.
type Config struct {
	Listen     string        // address to serve HTTPS on; "" disables the endpoint
	SecretFile string        // file holding the shared HMAC secret
	Window     time.Duration // replay window
	MaxBody    int64         // bytes per request
}

// Flag names, for the vigil-server command.
const (
	FlagListen     = "webhook-listen"
	FlagSecretFile = "webhook-secret-file"
	FlagWindow     = "webhook-window"
	FlagMaxBody    = "webhook-max-body"
)

// Flags returns the command-line flags FromFlags reads.
func Flags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: FlagListen, Usage: "serve signed external results over HTTPS on `ADDR`"},
		&cli.StringFlag{Name: FlagSecretFile, Usage: "`FILE` holding the webhook's HMAC secret (at least 16 bytes)"},
		&cli.DurationFlag{Name: FlagWindow, Usage: "accepted age of a signed request", Value: DefaultWindow},
		&cli.Int64Flag{Name: FlagMaxBody, Usage: "largest accepted request body in bytes", Value: DefaultMaxBody},
	}
}

// FromFlags builds a Config from the flags of Flags.
func FromFlags(c *cli.Context) (Config, error) {
	cfg := Config{
		Listen: c.String(FlagListen), SecretFile: c.String(FlagSecretFile),
		Window: c.Duration(FlagWindow), MaxBody: c.Int64(FlagMaxBody),
	}
	if cfg.Listen != "" && cfg.SecretFile == "" {
		return Config{}, fmt.Errorf("--%s needs --%s", FlagListen, FlagSecretFile)
	}
	return cfg, nil
}

// Options returns the Handler options the configuration sets.
func (c Config) Options() Options {
	return Options{Window: c.Window, MaxBody: c.MaxBody}
}

// Secret reads the secret file; surrounding whitespace is not part of the
// secret.
func (c Config) Secret() ([]byte, error) {
	return ReadSecret(c.SecretFile)
}

// ReadSecret reads a secret file, refusing one other users may read.
func ReadSecret(path string) ([]byte, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("read secret: %w", err)
	}
	if st.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("read secret %s: mode %v lets other users read it, want 0600", path, st.Mode().Perm())
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read secret: %w", err)
	}
	secret := bytes.TrimSpace(data)
	if len(secret) < 16 {
		return nil, fmt.Errorf("read secret %s: %d bytes, want at least 16", path, len(secret))
	}
	return secret, nil
}
