package export

import (
	"bufio"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/urfave/cli/v2"
)

func TestOpenFromFlags(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	path := filepath.Join(t.TempDir(), "events.jsonl")

	var cfg Config
	app := &cli.App{Flags: Flags(), Action: func(c *cli.Context) error { cfg = FromFlags(c); return nil }}
	args := []string{"vigil-server", "--export-jsonl", path, "--export-jsonl-keep", "3",
		"--export-syslog", "tcp://" + ln.Addr().String(), "--export-syslog-hostname", "vigil-host"}
	if err := app.Run(args); err != nil {
		t.Fatal(err)
	}
	if cfg.JSONLKeep != 3 || len(cfg.Syslog) != 1 || cfg.Queue != DefaultQueue {
		t.Fatalf("cfg = %+v", cfg)
	}

	e, err := Open(cfg, quiet(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	e.Publish(events(1)[0])
	conn, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	checkSyslog(t, readOctetFrames(t, bufio.NewReader(conn), 1)[0], 1)
	closeExporter(t, e)
	if seqs := readSeqs(t, path); len(seqs) != 1 {
		t.Fatalf("file records %v", seqs)
	}
}

func TestOpenRejects(t *testing.T) {
	dir := t.TempDir()
	secret := filepath.Join(dir, "secret")
	os.WriteFile(secret, []byte("0123456789abcdef"), 0o644)
	tests := []struct {
		name string
		cfg  Config
	}{
		{name: "syslog scheme", cfg: Config{JSONL: filepath.Join(dir, "a.jsonl"), Syslog: []string{"tls://127.0.0.1:1"}}},
		{name: "webhook url", cfg: Config{Webhook: []string{"ftp://127.0.0.1/x"}}},
		{name: "readable secret", cfg: Config{Webhook: []string{"http://127.0.0.1:1/"}, WebhookSecretFile: secret}},
		{name: "jsonl dir missing", cfg: Config{JSONL: filepath.Join(dir, "no", "a.jsonl")}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := Open(tt.cfg, quiet(), Options{}); err == nil {
				t.Fatal("accepted")
			}
		})
	}
}
