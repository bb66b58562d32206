package export

import (
	"errors"
	"fmt"
	"log/slog"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/vigilsec/vigil/server/webhook"
)

// Config is the export part of the server's configuration.
type Config struct {
	JSONL             string   // JSON-lines file; "" for none
	JSONLMaxBytes     int64    // rotation size
	JSONLKeep         int      // rotated files kept
	Syslog            []string // tcp://, udp://, unix:// or unixgram:// targets
	SyslogHostname    string   // HOSTNAME field; "" for the host's name
	Webhook           []string // http(s) URLs receiving batches
	WebhookSecretFile string   // when set, webhook batches are signed
	Queue             int      // records buffered per sink
}

// Flag names, for the vigil-server command.
const (
	FlagJSONL             = "export-jsonl"
	FlagJSONLMaxBytes     = "export-jsonl-max-bytes"
	FlagJSONLKeep         = "export-jsonl-keep"
	FlagSyslog            = "export-syslog"
	FlagSyslogHostname    = "export-syslog-hostname"
	FlagWebhook           = "export-webhook"
	FlagWebhookSecretFile = "export-webhook-secret-file"
	FlagQueue             = "export-queue"
)

// Flags returns the command-line flags FromFlags reads.
func Flags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: FlagJSONL, Usage: "append every event as OCSF JSON lines to `PATH`"},
		&cli.Int64Flag{Name: FlagJSONLMaxBytes, Usage: "rotate the JSON-lines file at this size", Value: DefaultFileMaxBytes},
		&cli.IntFlag{Name: FlagJSONLKeep, Usage: "rotated JSON-lines files kept", Value: DefaultFileKeep},
		&cli.GenericFlag{Name: FlagSyslog, Usage: "send events to syslog at `URL`: tcp://H:P, udp://H:P, unix:///PATH or unixgram:///PATH (repeatable)", Value: &targetList{}},
		&cli.StringFlag{Name: FlagSyslogHostname, Usage: "HOSTNAME of syslog messages (default: this host's name)"},
		&cli.GenericFlag{Name: FlagWebhook, Usage: "POST event batches to `URL` (repeatable)", Value: &targetList{}},
		&cli.StringFlag{Name: FlagWebhookSecretFile, Usage: "sign webhook batches with the HMAC secret in `FILE`"},
		&cli.IntFlag{Name: FlagQueue, Usage: "events buffered per sink before new ones are dropped", Value: DefaultQueue},
	}
}

// FromFlags builds a Config from the flags of Flags.
func FromFlags(c *cli.Context) Config {
	list := func(name string) []string {
		if l, ok := c.Generic(name).(*targetList); ok && l != nil {
			return l.values
		}
		return nil
	}
	return Config{
		JSONL: c.String(FlagJSONL), JSONLMaxBytes: c.Int64(FlagJSONLMaxBytes), JSONLKeep: c.Int(FlagJSONLKeep),
		Syslog: list(FlagSyslog), SyslogHostname: c.String(FlagSyslogHostname),
		Webhook: list(FlagWebhook), WebhookSecretFile: c.String(FlagWebhookSecretFile),
		Queue: c.Int(FlagQueue),
	}
}

// Open builds the configured sinks and an Exporter owning them; with no sink
// configured, Publish does nothing. opts.Queue is taken from cfg when set.
func Open(cfg Config, log *slog.Logger, opts Options) (*Exporter, error) {
	sinks, err := cfg.sinks()
	if err != nil {
		for _, s := range sinks {
			s.Close()
		}
		return nil, err
	}
	if cfg.Queue > 0 {
		opts.Queue = cfg.Queue
	}
	e, err := New(log, opts, sinks...)
	if err != nil {
		for _, s := range sinks {
			s.Close()
		}
		return nil, err
	}
	return e, nil
}

// sinks builds the configured sinks; on error it returns those already built.
func (cfg Config) sinks() ([]Sink, error) {
	var sinks []Sink
	if cfg.JSONL != "" {
		s, err := NewFileSink(cfg.JSONL, cfg.JSONLMaxBytes, cfg.JSONLKeep)
		if err != nil {
			return sinks, err
		}
		sinks = append(sinks, s)
	}
	for _, target := range cfg.Syslog {
		s, err := NewSyslogSink(target, SyslogOptions{Hostname: cfg.SyslogHostname})
		if err != nil {
			return sinks, err
		}
		sinks = append(sinks, s)
	}
	if len(cfg.Webhook) == 0 {
		return sinks, nil
	}
	var secret []byte
	if cfg.WebhookSecretFile != "" {
		var err error
		if secret, err = webhook.ReadSecret(cfg.WebhookSecretFile); err != nil {
			return sinks, fmt.Errorf("export webhook: %w", err)
		}
	}
	var errs []error
	for _, url := range cfg.Webhook {
		s, err := NewHTTPSink(url, HTTPOptions{Secret: secret})
		if err != nil {
			errs = append(errs, err)
			continue
		}
		sinks = append(sinks, s)
	}
	return sinks, errors.Join(errs...)
}

// targetList collects a repeated flag without splitting values on commas.
type targetList struct{ values []string }

func (l *targetList) Set(v string) error { l.values = append(l.values, v); return nil }
func (l *targetList) String() string     { return strings.Join(l.values, " ") }
