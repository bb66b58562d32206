package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/vigilsec/vigil/server/api"
	"github.com/vigilsec/vigil/server/decide"
	"github.com/vigilsec/vigil/server/export"
	"github.com/vigilsec/vigil/server/intel"
	"github.com/vigilsec/vigil/server/metrics"
	"github.com/vigilsec/vigil/server/pki"
	"github.com/vigilsec/vigil/server/registry"
	"github.com/vigilsec/vigil/server/store"
)

// shutdownGrace bounds how long in-flight calls may finish at shutdown.
const shutdownGrace = 10 * time.Second

func serve(c *cli.Context) error {
	log, err := newLogger(c.String("log-level"))
	if err != nil {
		return err
	}
	dir := c.String("data-dir")
	if dir == "" {
		return errors.New("--data-dir is required")
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create data dir: %w", err)
	}

	// Identity: the CA and, at first start, the admin credentials.
	ca, err := pki.Open(dir)
	if err != nil {
		return err
	}
	adminDir, err := ca.EnsureAdmin()
	if err != nil {
		return err
	}

	// State: badger, then the agent registry on top of it.
	st, err := store.Open(store.Options{Dir: filepath.Join(dir, "db"), Logger: log,
		Retention: store.Retention{MaxAge: c.Duration("event-max-age"), MaxBytes: c.Int64("event-max-bytes")}})
	if err != nil {
		return err
	}
	defer closeStore(st, log)
	reg, err := registry.New(st)
	if err != nil {
		return err
	}

	// Exports first: the dispatcher hands every stored event to them.
	m := metrics.New()
	exp, err := openExporter(c, log, m.Registerer())
	if err != nil {
		return err
	}
	defer closeExporter(exp, log)

	d, err := newDaemon(c, log, ca, st, reg, m, exp)
	if err != nil {
		return err
	}
	log.Info("server listening", "addr", d.lis.Addr().String(), "credentials", adminDir)
	if d.results != nil {
		log.Info("webhook listening", "addr", d.results.lis.Addr().String())
	}

	ctx, stop := signal.NotifyContext(c.Context, syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	return run(ctx, log, d)
}

// newDaemon builds, on the opened state, the decision engine, its inputs
// from existing systems and the gRPC server, and listens. On error nothing
// is left listening.
func newDaemon(c *cli.Context, log *slog.Logger, ca *pki.Authority, st *store.Store,
	reg *registry.Registry, m *metrics.Metrics, exp *export.Exporter) (*daemon, error) {
	// Decisions: the engine reaches agents through the dispatcher.
	d := &daemon{st: st, m: m, metricsAddr: c.String("metrics")}
	disp := api.NewDispatcher(api.DispatcherConfig{Store: st, Registry: reg, Publisher: exp,
		Metrics: m, Logger: log})
	var err error
	if d.eng, err = decide.New(decide.Config{KV: st.Namespace("decide/"), Sink: disp, Logger: log}); err != nil {
		return nil, err
	}

	// Inputs from existing systems: threat-intel feeds and signed results.
	hosts := certHosts(c)
	if d.feeds, err = newIntel(c, d.eng, log, m.Registerer()); err != nil {
		return nil, err
	}
	if d.results, err = newResultsEndpoint(c, d.eng, ca, hosts, log, m.Registerer()); err != nil {
		return nil, err
	}

	// Transport: the gRPC server over mutual TLS.
	d.srv, err = api.New(api.Config{Store: st, Registry: reg, Authority: ca, Engine: d.eng,
		Dispatcher: disp, Metrics: m, Logger: log, Hosts: hosts, TokenTTL: c.Duration("token-ttl")})
	if err == nil {
		if d.lis, err = net.Listen("tcp", c.String("listen")); err != nil {
			err = fmt.Errorf("listen: %w", err)
		}
	}
	if err != nil {
		d.results.close()
		return nil, err
	}
	return d, nil
}

// certHosts returns the --host values plus the --listen and
// --webhook-listen addresses when they name one IP, so clients dialing those
// addresses can verify the server.
func certHosts(c *cli.Context) []string {
	hosts := append(c.StringSlice("host"), webhookHost(c)...)
	host, _, err := net.SplitHostPort(c.String("listen"))
	if ip := net.ParseIP(host); err == nil && ip != nil && !ip.IsUnspecified() {
		hosts = append(hosts, host)
	}
	return hosts
}

// daemon is what run serves; feeds and results may be nil.
type daemon struct {
	srv         *api.Server
	lis         net.Listener
	eng         *decide.Engine
	st          *store.Store
	m           *metrics.Metrics
	feeds       *intel.Manager
	results     *resultsEndpoint
	metricsAddr string
}

// run serves until ctx ends, then shuts the server down gracefully and waits
// for the background loops, so the caller may close the exporter and the
// store.
func run(ctx context.Context, log *slog.Logger, d *daemon) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errc := make(chan error, 3)
	go func() { errc <- d.srv.Serve(d.lis) }()

	// Background loops: engine time (finding expiry, windows), retention,
	// feed reloads and the results endpoint.
	var wg sync.WaitGroup
	wg.Go(func() { logLoopErr(log, "engine", d.eng.Run(ctx)) })
	wg.Go(func() { pruneLoop(ctx, log, d.st) })
	if d.feeds != nil {
		wg.Go(func() { d.feeds.Run(ctx) })
	}
	if d.results != nil {
		wg.Go(func() { sendErr(errc, d.results.serve(ctx)) })
	}

	// Metrics, when asked for, on their own listener.
	var msrv *http.Server
	if d.metricsAddr != "" {
		mux := http.NewServeMux()
		mux.Handle("/metrics", d.m.Handler())
		msrv = &http.Server{Addr: d.metricsAddr, Handler: mux, ReadHeaderTimeout: 5 * time.Second}
		go func() {
			if err := msrv.ListenAndServe(); !errors.Is(err, http.ErrServerClosed) {
				errc <- fmt.Errorf("serve metrics: %w", err)
			}
		}()
	}

	var err error
	select {
	case <-ctx.Done():
		log.Info("shutting down")
	case err = <-errc:
	}
	err = errors.Join(err, shutdown(d.srv, msrv))
	cancel()
	wg.Wait()
	return err
}

// sendErr passes a non-nil error on without blocking; errc has room for one
// error of each source.
func sendErr(errc chan<- error, err error) {
	if err != nil {
		errc <- err
	}
}

func logLoopErr(log *slog.Logger, loop string, err error) {
	if err != nil {
		log.Error("background loop ended", "loop", loop, "err", err)
	}
}

func shutdown(srv *api.Server, msrv *http.Server) error {
	ctx, cancel := context.WithTimeout(context.Background(), shutdownGrace)
	defer cancel()
	srv.Shutdown(ctx)
	if msrv == nil {
		return nil
	}
	if err := msrv.Shutdown(ctx); err != nil {
		return fmt.Errorf("shut down metrics: %w", err)
	}
	return nil
}

// pruneLoop applies the event retention every minute.
func pruneLoop(ctx context.Context, log *slog.Logger, st *store.Store) {
	t := time.NewTicker(time.Minute)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			if err := st.Prune(now); err != nil {
				log.Error("prune events", "err", err)
			}
		}
	}
}

func closeStore(st *store.Store, log *slog.Logger) {
	if err := st.Close(); err != nil {
		log.Error("close store", "err", err)
	}
}
