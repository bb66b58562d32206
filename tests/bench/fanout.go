package bench

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"time"

	vigilpb "github.com/vigilsec/vigil/gen/vigil/v1"
	"github.com/vigilsec/vigil/internal/ctlclient"
	"github.com/vigilsec/vigil/server/api"
	"github.com/vigilsec/vigil/server/decide"
	"github.com/vigilsec/vigil/server/pki"
	"github.com/vigilsec/vigil/server/registry"
	"github.com/vigilsec/vigil/server/store"
)

// fanOutPolicy is applied before the agents connect; fanOutChange is the
// policy change pushed to all of them, which changes every agent's table.
const (
	fanOutPolicy = `version: 1
levels: [low, high]
defaults:
  level: high
  traffic: allow
  unknown_peers: deny
rules:
  - name: no-telnet
    action: deny
    subjects:
      - devices: ["*"]
    destinations:
      - cidrs: ["198.18.0.0/24"]
        ports: ["23"]
`
	fanOutChange = fanOutPolicy + `  - name: no-bench-https
    action: deny
    subjects:
      - devices: ["*"]
    destinations:
      - cidrs: ["198.19.0.0/24"]
        ports: ["443"]
`
)

// FanOut is scenario 5: 1,000 and then 10,000 simulated agents, each a real
// gRPC stream over loopback with its own mutual-TLS certificate, connected
// to one in-process server with the real engine. It measures the time from
// a policy change to the last agent's table acknowledgement, and the
// server's heap per connected agent. The agents run in a worker process, so
// the heap measured is the server's alone.
func FanOut(e *Env, rep *Report) error {
	sizes := []int{1000, 10_000}
	if e.Quick {
		sizes = []int{100, 1000}
	}
	for _, n := range sizes {
		// Each size gets a fresh server; the previous one is gone.
		c := e.child()
		err := c.fanOut(rep, n)
		c.Close()
		if err != nil {
			return fmt.Errorf("%d agents: %w", n, err)
		}
	}
	return nil
}

func (e *Env) fanOut(rep *Report, n int) error {
	dir, err := e.tempDir("vigil-bench-fanout-")
	if err != nil {
		return err
	}
	srv, err := e.startServer(dir)
	if err != nil {
		return err
	}
	admin, err := srv.admin()
	if err != nil {
		return err
	}
	if err := applyPolicy(admin, fanOutPolicy); err != nil {
		return err
	}

	// Agents: certificates issued directly, then connected by the worker.
	creds, err := srv.issueAgents(dir, n)
	if err != nil {
		return err
	}
	heap0 := heapBytes()
	start := time.Now()
	srv.watch.arm(n)
	exited, err := e.startFanOutWorker(srv.addr, creds)
	if err != nil {
		return err
	}
	if err := srv.watch.wait(5*time.Minute, exited); err != nil {
		return fmt.Errorf("agents online: %w", err)
	}
	online := time.Since(start)
	perAgent := float64(heapBytes()-heap0) / float64(n)

	// The change: from the apply call to the last agent's acknowledgement.
	srv.watch.arm(n)
	t0 := time.Now()
	if err := applyPolicy(admin, fanOutChange); err != nil {
		return err
	}
	if err := srv.watch.wait(time.Minute, exited); err != nil {
		return fmt.Errorf("policy change acked: %w", err)
	}
	last := srv.watch.last.Sub(t0)

	variant := fmt.Sprintf("%d agents", n)
	var t *Target
	if n == 10_000 {
		t = &Target{Max: true, Bound: 2000}
	}
	add := func(metric string, v float64, unit string, t *Target) {
		rep.Add(Row{Scenario: "fanout", Variant: variant, Metric: metric, Value: v, Unit: unit, Target: t})
	}
	add("policy change to last ack", ms(last), "ms", t)
	add("server heap per agent", perAgent/1024, "KiB", nil)
	add("all connected and acked", ms(online), "ms", nil)
	return nil
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// heapBytes is the live heap after a collection.
func heapBytes() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// server is an in-process vigil-server wired as cmd/vigil-server wires it,
// with its engine's table acknowledgements observed.
type server struct {
	addr     string
	ca       *pki.Authority
	reg      *registry.Registry
	adminDir string
	watch    *ackWatch
}

// startServer starts a server on dir listening on a free loopback port;
// Close stops it.
func (e *Env) startServer(dir string) (*server, error) {
	quiet := slog.New(slog.DiscardHandler)
	ca, err := pki.Open(dir)
	if err != nil {
		return nil, err
	}
	adminDir, err := ca.EnsureAdmin()
	if err != nil {
		return nil, err
	}
	st, err := store.Open(store.Options{Dir: filepath.Join(dir, "db"), Logger: quiet})
	if err != nil {
		return nil, err
	}
	e.Defer(func() { st.Close() })
	reg, err := registry.New(st)
	if err != nil {
		return nil, err
	}

	disp := api.NewDispatcher(api.DispatcherConfig{Store: st, Registry: reg, Logger: quiet})
	eng, err := decide.New(decide.Config{KV: st.Namespace("decide/"), Sink: disp, Logger: quiet})
	if err != nil {
		return nil, err
	}
	watch := &ackWatch{Engine: eng}
	srv, err := api.New(api.Config{Store: st, Registry: reg, Authority: ca, Engine: watch,
		Dispatcher: disp, Logger: quiet})
	if err != nil {
		return nil, err
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); _ = srv.Serve(lis) }()
	go func() { defer wg.Done(); _ = eng.Run(ctx) }()
	e.Defer(func() {
		sctx, scancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer scancel()
		srv.Shutdown(sctx)
		cancel()
		wg.Wait()
	})
	return &server{addr: lis.Addr().String(), ca: ca, reg: reg, adminDir: adminDir, watch: watch}, nil
}

// admin returns an admin client with the server's admin credentials.
func (s *server) admin() (vigilpb.AdminServiceClient, error) {
	conn, err := ctlclient.Dial(s.addr, s.adminDir)
	if err != nil {
		return nil, err
	}
	return vigilpb.NewAdminServiceClient(conn), nil
}

func applyPolicy(admin vigilpb.AdminServiceClient, yaml string) error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	resp, err := admin.ApplyPolicy(ctx, &vigilpb.ApplyPolicyRequest{
		Document: &vigilpb.PolicyDocument{Filename: "bench.yaml", Yaml: yaml}})
	if err != nil {
		return fmt.Errorf("apply policy: %w", err)
	}
	if len(resp.GetErrors()) > 0 {
		return fmt.Errorf("apply policy: %v", resp.GetErrors())
	}
	return nil
}

// fanOutCreds is what the fan-out worker needs: the CA, one key shared by
// every simulated agent, and each agent's certificate.
type fanOutCreds struct {
	CA    []byte   `json:"ca"`
	Key   []byte   `json:"key"`
	Names []string `json:"names"`
	Certs [][]byte `json:"certs"`
}

// issueAgents enrolls n agents directly in the registry with certificates
// signed by the server's CA, and writes their credentials to a file.
func (s *server) issueAgents(dir string, n int) (string, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", err
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader,
		&x509.CertificateRequest{Subject: pkix.Name{CommonName: "sim"}}, key)
	if err != nil {
		return "", fmt.Errorf("create request: %w", err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return "", err
	}
	c := fanOutCreds{CA: s.ca.CertPEM(), Key: pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})}

	for i := range n {
		name := fmt.Sprintf("sim-%05d", i)
		cert, serial, err := s.ca.SignAgent(name, csr)
		if err != nil {
			return "", err
		}
		if err := s.reg.Enroll(name, serial, "bench"); err != nil {
			return "", fmt.Errorf("enroll %s: %w", name, err)
		}
		c.Names, c.Certs = append(c.Names, name), append(c.Certs, cert)
	}
	b, err := json.Marshal(c)
	if err != nil {
		return "", err
	}
	path := filepath.Join(dir, "agents.json")
	return path, os.WriteFile(path, b, 0o600)
}

// startFanOutWorker starts the simulated agents; they disconnect at Close.
// The channel it returns is closed when the worker exits.
func (e *Env) startFanOutWorker(addr, creds string) (<-chan struct{}, error) {
	cmd := e.Worker(nil, "fanout", addr, creds)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start fan-out worker: %w", err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	e.Defer(func() {
		stdin.Close()
		select {
		case <-exited:
		case <-time.After(30 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
	})
	return exited, nil
}

// ackWatch passes every call to the engine and notes table
// acknowledgements, so a scenario can wait for n distinct agents to
// acknowledge a table after arm.
type ackWatch struct {
	api.Engine

	mu      sync.Mutex
	seen    map[string]bool // guarded by mu; agents acked since arm
	pending int             // guarded by mu; agents still to ack
	done    chan struct{}   // guarded by mu; closed when pending reaches 0
	last    time.Time       // written before done closes
}

// arm starts waiting for n agents' next acknowledgements.
func (w *ackWatch) arm(n int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.seen, w.pending, w.done = map[string]bool{}, n, make(chan struct{})
}

// TableAcked records the acknowledgement, then hands it to the engine.
func (w *ackWatch) TableAcked(agent string, version uint64) {
	w.Engine.TableAcked(agent, version)
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.seen == nil || w.seen[agent] || w.pending == 0 {
		return
	}
	w.seen[agent] = true
	w.pending--
	if w.pending == 0 {
		w.last = time.Now()
		close(w.done)
	}
}

// wait waits for the agents armed for, unless the worker running them
// exits or timeout passes.
func (w *ackWatch) wait(timeout time.Duration, exited <-chan struct{}) error {
	w.mu.Lock()
	done := w.done
	w.mu.Unlock()
	select {
	case <-done:
		return nil
	case <-exited:
		return errors.New("fan-out worker exited (its error is on stderr)")
	case <-time.After(timeout):
		w.mu.Lock()
		defer w.mu.Unlock()
		return fmt.Errorf("%d agents did not acknowledge within %s", w.pending, timeout)
	}
}

// readyLine waits for a worker's first line of output.
func readyLine(r io.Reader, timeout time.Duration) (string, error) {
	line := make(chan string, 1)
	go func() {
		s, _ := bufio.NewReader(r).ReadString('\n')
		line <- s
	}()
	select {
	case s := <-line:
		if s == "" {
			return "", errors.New("worker ended before it was ready")
		}
		return s, nil
	case <-time.After(timeout):
		return "", fmt.Errorf("worker not ready after %s", timeout)
	}
}
