package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/urfave/cli/v2"

	"github.com/vigilsec/vigil/server/decide"
	"github.com/vigilsec/vigil/server/export"
	"github.com/vigilsec/vigil/server/intel"
	"github.com/vigilsec/vigil/server/pki"
	"github.com/vigilsec/vigil/server/webhook"
)

// exportFlushGrace bounds how long queued exports may drain at shutdown.
const exportFlushGrace = 5 * time.Second

// integrationFlags are the flags of the security integrate interface:
// threat-intel feeds, inbound results and outbound events.
func integrationFlags() []cli.Flag {
	var flags []cli.Flag
	flags = append(flags, intel.Flags()...)
	flags = append(flags, webhook.Flags()...)
	return append(flags, export.Flags()...)
}

// openExporter starts the configured export sinks, with their drop counter
// on reg. The caller closes the exporter with closeExporter.
func openExporter(c *cli.Context, log *slog.Logger, reg prometheus.Registerer) (*export.Exporter, error) {
	exp, err := export.Open(export.FromFlags(c), log, export.Options{Registerer: reg})
	if err != nil {
		return nil, fmt.Errorf("open exports: %w", err)
	}
	return exp, nil
}

// closeExporter flushes what is queued, within exportFlushGrace, and closes
// the sinks.
func closeExporter(exp *export.Exporter, log *slog.Logger) {
	ctx, cancel := context.WithTimeout(context.Background(), exportFlushGrace)
	defer cancel()
	if err := exp.Close(ctx); err != nil {
		log.Error("close exports", "err", err)
	}
	for sink, n := range exp.Dropped() {
		if n > 0 {
			log.Warn("export records lost", "sink", sink, "dropped", n)
		}
	}
}

// newIntel returns the feed manager feeding eng, with its metrics on reg,
// or nil when no feed is configured.
func newIntel(c *cli.Context, eng *decide.Engine, log *slog.Logger,
	reg prometheus.Registerer) (*intel.Manager, error) {
	cfg, err := intel.FromFlags(c)
	if err != nil || len(cfg.Feeds) == 0 {
		return nil, err
	}
	mgr, err := intel.NewManager(cfg.Feeds, eng, log, intel.Options{})
	if err != nil {
		return nil, fmt.Errorf("intel feeds: %w", err)
	}
	if err := reg.Register(mgr.Collector()); err != nil {
		return nil, fmt.Errorf("register intel metrics: %w", err)
	}
	return mgr, nil
}

// resultsEndpoint is the HTTPS endpoint for signed external results.
type resultsEndpoint struct {
	lis     net.Listener
	handler *webhook.Handler
	cert    tls.Certificate
	log     *slog.Logger
}

// webhookHost returns the --webhook-listen host when it names one IP, for
// the server certificate.
func webhookHost(c *cli.Context) []string {
	host, _, err := net.SplitHostPort(c.String(webhook.FlagListen))
	if ip := net.ParseIP(host); err == nil && ip != nil && !ip.IsUnspecified() {
		return []string{host}
	}
	return nil
}

// newResultsEndpoint reads the webhook secret, builds the handler reporting
// to eng and listens, or returns nil when --webhook-listen is not set. The
// endpoint serves the server's certificate for hosts. The caller owns the
// listener until it hands it to serveResults.
func newResultsEndpoint(c *cli.Context, eng *decide.Engine, ca *pki.Authority, hosts []string,
	log *slog.Logger, reg prometheus.Registerer) (*resultsEndpoint, error) {
	cfg, err := webhook.FromFlags(c)
	if err != nil || cfg.Listen == "" {
		return nil, err
	}
	secret, err := cfg.Secret()
	if err != nil {
		return nil, fmt.Errorf("webhook: %w", err)
	}
	opts := cfg.Options()
	opts.Registerer = reg
	h, err := webhook.NewHandler(secret, eng, log, opts)
	if err != nil {
		return nil, err
	}

	cert, err := serverCert(ca, hosts)
	if err != nil {
		return nil, err
	}
	lis, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("listen webhook: %w", err)
	}
	return &resultsEndpoint{lis: lis, handler: h, cert: cert, log: log}, nil
}

// serverCert loads the server's certificate with the CA appended, as the
// gRPC listener presents it.
func serverCert(ca *pki.Authority, hosts []string) (tls.Certificate, error) {
	certPEM, keyPEM, err := ca.ServerCertificate(hosts)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("webhook certificate: %w", err)
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("webhook certificate: %w", err)
	}
	pair.Certificate = append(pair.Certificate, ca.CertDER())
	return pair, nil
}

// serve serves the endpoint until ctx ends; it closes the listener.
func (r *resultsEndpoint) serve(ctx context.Context) error {
	if err := webhook.Serve(ctx, r.lis, r.handler, r.cert, r.log); err != nil {
		return fmt.Errorf("serve webhook: %w", err)
	}
	return nil
}

// close releases the listener of an endpoint that will not be served; a nil
// endpoint does nothing.
func (r *resultsEndpoint) close() {
	if r != nil {
		r.lis.Close()
	}
}
