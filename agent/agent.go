// Package agent wires the agent's parts into one running agent: enrollment,
// the kernel data plane, the process table, the spool, the applier, posture
// and counters reporting, metrics, and the stream to the server.
//
// cmd/vigil-agent calls Run once. Run owns everything it opens: the data
// plane handle (closed on return, its pins kept unless asked otherwise), the
// ring-buffer reader, the spool, and the metrics server.
package agent

import (
	"context"
	"errors"
	"fmt"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/vigilsec/vigil/agent/apply"
	"github.com/vigilsec/vigil/agent/dataplane"
	"github.com/vigilsec/vigil/agent/enroll"
	"github.com/vigilsec/vigil/agent/metrics"
	"github.com/vigilsec/vigil/agent/posture"
	"github.com/vigilsec/vigil/agent/proctable"
	"github.com/vigilsec/vigil/agent/spool"
	"github.com/vigilsec/vigil/agent/stream"
	vigilpb "github.com/vigilsec/vigil/gen/vigil/v1"
	"google.golang.org/protobuf/proto"
)

// Config is what cmd/vigil-agent passes to Run.
type Config struct {
	Server        string   // server address, host:port
	Token         string   // enrollment token; needed only on first start
	DataDir       string   // identity, spool and state (created 0700)
	Name          string   // agent name; the certificate's identity
	Cgroup        string   // scope: cgroup v2 directory ("" = the root)
	MetricsAddr   string   // "" = no metrics server
	Addresses     []string // reported instead of the namespace's addresses when set
	SpoolLimit    int64    // bytes; 0 = spool.DefaultLimit
	Version       string   // agent build version for Hello
	CleanupOnExit bool     // remove the scope's pins when Run returns
	Logger        *slog.Logger

	PostureEvery  time.Duration // 0 = 30 s
	CountersEvery time.Duration // 0 = 5 s
}

// Run enrolls (first start only), opens the data plane, and runs the agent
// until ctx ends. Enforcement continues after Run returns unless
// CleanupOnExit is set.
func Run(ctx context.Context, cfg Config) error {
	cfg = withDefaults(cfg)
	log := cfg.Logger
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return fmt.Errorf("create data dir: %w", err)
	}

	// Identity: saved credentials, or enrollment with the token.
	creds, err := identity(ctx, cfg)
	if err != nil {
		return err
	}
	log.Info("identity ready", "agent", creds.Name)

	// Kernel: load or adopt the pinned data plane of the scope.
	dp, err := dataplane.Open(dataplane.Config{CgroupPath: cfg.Cgroup, Logger: log})
	if err != nil {
		return fmt.Errorf("open dataplane: %w", err)
	}
	defer closeDataplane(dp, cfg, log)

	a, err := newAgent(ctx, cfg, creds, dp)
	if err != nil {
		return err
	}
	defer a.spool.Close()
	return a.run(ctx)
}

func withDefaults(cfg Config) Config {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Name == "" {
		cfg.Name, _ = os.Hostname()
	}
	if cfg.Cgroup == "" {
		cfg.Cgroup = dataplane.DefaultCgroupRoot
	}
	if cfg.PostureEvery == 0 {
		cfg.PostureEvery = 30 * time.Second
	}
	if cfg.CountersEvery == 0 {
		cfg.CountersEvery = 5 * time.Second
	}
	return cfg
}

// identity loads the saved credentials, or enrolls, retrying with backoff
// while the server is unreachable. A refusal (a spent, expired or foreign
// token, a taken name) is final: retrying it would only hide the problem.
func identity(ctx context.Context, cfg Config) (*enroll.Credentials, error) {
	dir := filepath.Join(cfg.DataDir, "identity")
	creds, err := enroll.Load(dir)
	if !errors.Is(err, enroll.ErrNotEnrolled) {
		return creds, err
	}
	if cfg.Token == "" {
		return nil, errors.New("agent is not enrolled and no --token was given")
	}
	if _, err := enroll.ParseToken(cfg.Token); err != nil {
		return nil, err
	}

	delay := 250 * time.Millisecond
	for {
		creds, err = enroll.Enroll(ctx, cfg.Server, cfg.Token, cfg.Name, dir)
		if err == nil || errors.Is(err, enroll.ErrPinMismatch) || refused(err) || ctx.Err() != nil {
			return creds, err
		}
		cfg.Logger.Warn("enrollment failed, retrying", "err", err, "retry_in", delay)
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(delay):
		}
		delay = min(2*delay, 30*time.Second)
	}
}

// refused reports whether the server turned an enrollment down for good.
func refused(err error) bool {
	switch status.Code(err) {
	case codes.InvalidArgument, codes.Unauthenticated, codes.FailedPrecondition,
		codes.PermissionDenied, codes.AlreadyExists:
		return true
	}
	return false
}

func closeDataplane(dp *dataplane.Dataplane, cfg Config, log *slog.Logger) {
	if err := dp.Close(); err != nil {
		log.Error("close dataplane", "err", err)
	}
	if !cfg.CleanupOnExit {
		log.Info("pins kept, enforcement continues")
		return
	}
	if err := dataplane.Cleanup(dataplane.PinPathFor(cfg.Cgroup)); err != nil {
		log.Error("clean up pins", "err", err)
	}
}

// agent is one running agent; its fields are set before run starts and
// read-only afterwards, except where noted.
type agent struct {
	cfg     Config
	log     *slog.Logger
	dp      *dataplane.Dataplane
	procs   *proctable.Table
	spool   *spool.Spool
	applier *apply.Applier
	client  *stream.Client
	metrics *metrics.Metrics

	mu      sync.Mutex
	posture *vigilpb.Posture // last collected; guarded by mu
}

func newAgent(ctx context.Context, cfg Config, creds *enroll.Credentials,
	dp *dataplane.Dataplane) (*agent, error) {
	a := &agent{
		cfg: cfg, log: cfg.Logger, dp: dp, procs: proctable.New("/proc"), metrics: metrics.New(),
	}
	a.cfg.Name = creds.Name

	// Processes that predate the agent get full identity too.
	tasks, err := dp.Tasks()
	if err != nil {
		return nil, fmt.Errorf("list tasks: %w", err)
	}
	a.procs.Seed(tasks)

	if a.spool, err = spool.Open(filepath.Join(cfg.DataDir, "spool"), cfg.SpoolLimit); err != nil {
		return nil, fmt.Errorf("open spool: %w", err)
	}
	a.logSpoolRepair(a.spool.Recovery())
	if err := a.openApplier(ctx); err != nil {
		a.spool.Close()
		return nil, err
	}

	a.client = stream.New(stream.Config{
		Addr: cfg.Server, TLS: creds.ClientTLS(), Spool: a.spool, Handler: a, Logger: a.log,
	})
	return a, nil
}

// logSpoolRepair warns about damage Open repaired in the spool.
func (a *agent) logSpoolRepair(r spool.Recovery) {
	if r.StateRebuilt {
		a.log.Warn("spool state unreadable, rebuilt from the segments; held events are sent again",
			"err", r.StateErr)
	}
	if r.DamagedBytes > 0 || r.LostEvents > 0 {
		a.log.Warn("spool damaged, unreadable bytes cut out", "bytes", r.DamagedBytes, "lost", r.LostEvents)
	}
}

// openApplier restores the saved table and writes it in its offline form
// until the server is reached.
func (a *agent) openApplier(ctx context.Context) error {
	server, port, err := serverAddress(ctx, a.cfg.Server)
	if err != nil {
		return err
	}
	a.applier, err = apply.New(apply.Config{
		Kernel: a.dp, Resolver: a.procs, StateDir: filepath.Join(a.cfg.DataDir, "state"),
		Scope: a.cfg.Cgroup, Server: server, ServerPort: port,
	})
	if err != nil {
		return fmt.Errorf("open applier: %w", err)
	}
	if err := a.applier.Reconcile(); err != nil {
		a.log.Error("reapply saved table", "err", err, "policy_version", a.applier.Table().PolicyVersion)
	}
	return nil
}

// serverAddress resolves the server's host to host prefixes and its port.
func serverAddress(ctx context.Context, addr string) ([]netip.Prefix, uint16, error) {
	host, portText, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, 0, fmt.Errorf("parse server address %q: %w", addr, err)
	}
	port, err := strconv.ParseUint(portText, 10, 16)
	if err != nil {
		return nil, 0, fmt.Errorf("parse server port %q: %w", portText, err)
	}
	ips, err := net.DefaultResolver.LookupNetIP(ctx, "ip", host)
	if err != nil {
		return nil, 0, fmt.Errorf("resolve server %q: %w", host, err)
	}

	var out []netip.Prefix
	for _, ip := range ips {
		ip = ip.Unmap()
		out = append(out, netip.PrefixFrom(ip, ip.BitLen()))
	}
	return out, uint16(port), nil
}

// run starts the loops and waits for ctx to end.
func (a *agent) run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	if a.cfg.MetricsAddr != "" {
		addr, err := a.metrics.Serve(ctx, a.cfg.MetricsAddr)
		if err != nil {
			return err
		}
		a.log.Info("metrics listening", "peer", addr.String())
	}
	a.refreshPosture(ctx)

	reader, err := a.dp.Events()
	if err != nil {
		return fmt.Errorf("open events: %w", err)
	}
	var wg sync.WaitGroup
	loops := []func(context.Context){
		a.syncLoop, a.postureLoop, a.countersLoop, a.streamLoop, a.streamStateLoop, a.pruneLoop,
	}
	for _, loop := range loops {
		wg.Go(func() { loop(ctx) })
	}
	wg.Go(func() { a.eventLoop(reader) })

	<-ctx.Done()
	reader.Close()
	wg.Wait()
	a.log.Info("agent stopped", "agent", a.cfg.Name)
	return nil
}

// eventLoop turns kernel events into spooled protocol events until the
// reader is closed.
func (a *agent) eventLoop(reader *dataplane.EventReader) {
	for {
		ev, err := reader.Read()
		if errors.Is(err, dataplane.ErrClosed) {
			return
		}
		if err != nil {
			a.log.Warn("read event", "err", err)
			continue
		}
		a.handleEvent(ev)
	}
}

// handleEvent describes, judges and spools one kernel event.
func (a *agent) handleEvent(ev dataplane.Event) {
	out := a.procs.Observe(ev)
	out.Agent = a.cfg.Name
	if ev.Kind == dataplane.EventExec {
		a.checkExec(ev.PID, out)
	}

	if _, err := a.spool.Append(out); err != nil {
		a.log.Error("spool event", "err", err, "pid", ev.PID)
		return
	}
	a.metrics.Events.WithLabelValues(kindLabel(out.Kind)).Inc()
}

// checkExec kills an exec of a listed executable the kernel did not know.
func (a *agent) checkExec(pid uint32, ev *vigilpb.Event) {
	p, ok := a.procs.Lookup(pid)
	if !ok {
		return
	}
	killed, err := a.applier.OnExec(p)
	if err != nil {
		a.log.Warn("kill listed executable", "err", err, "pid", pid)
	}
	if killed {
		ev.Message = "killed at exec: executable on the kill list"
		a.log.Info("killed listed executable", "pid", pid, "start_ns", p.StartTimeNs)
	}
}

// syncLoop makes spooled events durable in batches, every 50 ms.
func (a *agent) syncLoop(ctx context.Context) {
	every(ctx, 50*time.Millisecond, func() {
		if err := a.spool.Sync(); err != nil {
			a.log.Error("sync spool", "err", err)
		}
		st := a.spool.Stats()
		a.metrics.SpoolBytes.Set(float64(st.Bytes))
		a.metrics.SpoolPending.Set(float64(st.Pending))
		a.metrics.SpoolDropped.Set(float64(st.Dropped))
	})
}

// postureLoop re-collects the posture and sends it when it changed.
func (a *agent) postureLoop(ctx context.Context) {
	every(ctx, a.cfg.PostureEvery, func() {
		if a.refreshPosture(ctx) {
			body := &vigilpb.AgentMessage_Posture{Posture: a.currentPosture()}
			a.client.Send(&vigilpb.AgentMessage{Body: body})
		}
	})
}

// refreshPosture collects the posture and reports whether it changed.
func (a *agent) refreshPosture(ctx context.Context) bool {
	p, err := posture.Collect(ctx)
	if err != nil {
		a.log.Warn("collect posture", "err", err)
		return false
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	changed := !proto.Equal(p, a.posture)
	a.posture = p
	return changed
}

func (a *agent) currentPosture() *vigilpb.Posture {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.posture
}

// countersLoop reports kernel counters when they change, and at least once
// a minute so a new stream gets them.
func (a *agent) countersLoop(ctx context.Context) {
	var last *vigilpb.Counters
	var lastSent time.Time
	every(ctx, a.cfg.CountersEvery, func() {
		c, err := a.counters()
		if err != nil {
			a.log.Warn("read counters", "err", err)
			return
		}
		if proto.Equal(c, last) && time.Since(lastSent) < time.Minute {
			return
		}
		if a.client.Send(&vigilpb.AgentMessage{Body: &vigilpb.AgentMessage_Counters{Counters: c}}) {
			last, lastSent = c, time.Now()
		}
	})
}

func (a *agent) counters() (*vigilpb.Counters, error) {
	kc, err := a.dp.Counters()
	if err != nil {
		return nil, err
	}
	a.metrics.KernelLost.Set(float64(kc.EventsLost))
	a.metrics.KernelEvents.Set(float64(kc.EventsEmitted))
	for reason, n := range kc.Verdicts {
		a.metrics.Verdicts.WithLabelValues(reason).Set(float64(n))
	}
	return &vigilpb.Counters{
		EventsEmitted: kc.EventsEmitted, EventsLost: kc.EventsLost, Verdicts: kc.Verdicts,
		SpoolBytes: uint64(a.spool.Stats().Bytes),
	}, nil
}

// pruneLoop drops processes whose exit the table missed, every minute.
func (a *agent) pruneLoop(ctx context.Context) {
	every(ctx, time.Minute, func() {
		if n := a.procs.Prune(); n > 0 {
			a.log.Debug("pruned vanished processes", "count", n)
		}
	})
}

// streamLoop runs the stream client.
func (a *agent) streamLoop(ctx context.Context) {
	if err := a.client.Run(ctx); err != nil {
		a.log.Error("stream stopped", "err", err)
	}
}

// streamStateLoop mirrors the stream's state into metrics every second.
func (a *agent) streamStateLoop(ctx context.Context) {
	states := []string{"connecting", "online", "backoff"}
	every(ctx, time.Second, func() {
		a.metrics.SetStreamState(states[a.client.State()], states...)
	})
}

// every calls f every d until ctx ends.
func every(ctx context.Context, d time.Duration, f func()) {
	t := time.NewTicker(d)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			f()
		}
	}
}

// kindLabel turns EVENT_KIND_EXEC into "exec".
func kindLabel(k vigilpb.EventKind) string {
	return strings.ToLower(strings.TrimPrefix(k.String(), "EVENT_KIND_"))
}
