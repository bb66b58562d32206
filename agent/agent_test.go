package agent

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vigilsec/vigil/agent/dataplane"
	"github.com/vigilsec/vigil/agent/internal/testpki"
	vigilpb "github.com/vigilsec/vigil/gen/vigil/v1"
	"github.com/vigilsec/vigil/internal/testenv"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
)

// server is a small EnrollmentService and AgentService with real TLS: what
// agents send goes to in, what the test puts on out goes to the agent.
type server struct {
	vigilpb.UnimplementedEnrollmentServiceServer
	vigilpb.UnimplementedAgentServiceServer
	t     *testing.T
	ca    *testpki.CA
	token string
	addr  string
	stop  func() // closes the listener and every stream
	in    chan *vigilpb.AgentMessage
	out   chan *vigilpb.ServerMessage
}

func newServer(t *testing.T) *server {
	t.Helper()
	ca := testpki.New(t)
	s := &server{t: t, ca: ca, token: "vgl1.tok.secret." + ca.Fingerprint(),
		in: make(chan *vigilpb.AgentMessage, 4096), out: make(chan *vigilpb.ServerMessage)}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer(grpc.Creds(credentials.NewTLS(ca.ServerTLS(t, true))))
	vigilpb.RegisterEnrollmentServiceServer(gs, s)
	vigilpb.RegisterAgentServiceServer(gs, s)
	go gs.Serve(lis)
	t.Cleanup(gs.Stop)
	s.addr, s.stop = lis.Addr().String(), gs.Stop
	return s
}

func (s *server) Enroll(_ context.Context, req *vigilpb.EnrollRequest) (*vigilpb.EnrollResponse, error) {
	if req.Token != s.token {
		return nil, status.Error(codes.PermissionDenied, "bad token")
	}
	return &vigilpb.EnrollResponse{CertificatePem: s.ca.SignCSR(s.t, req.Name, req.CsrDer), CaPem: s.ca.PEM}, nil
}

func (s *server) Connect(st vigilpb.AgentService_ConnectServer) error {
	errc := make(chan error, 1)
	go func() {
		for {
			m, err := st.Recv()
			if err != nil {
				errc <- err
				return
			}
			s.in <- m
		}
	}()
	for {
		select {
		case m := <-s.out:
			if err := st.Send(m); err != nil {
				return err
			}
		case err := <-errc:
			return err
		}
	}
}

// expect returns the next message for which match returns true, skipping
// others; events are handed to onEvent.
func (s *server) expect(t *testing.T, what string, match func(*vigilpb.AgentMessage) bool) *vigilpb.AgentMessage {
	t.Helper()
	deadline := time.After(15 * time.Second)
	for {
		select {
		case m := <-s.in:
			if match(m) {
				return m
			}
		case <-deadline:
			t.Fatalf("no %s from the agent within 15s", what)
		}
	}
}

func (s *server) send(m *vigilpb.ServerMessage) { s.out <- m }

// startAgent runs the agent on a scope until the test ends.
func startAgent(t *testing.T, srv *server, dataDir, scope string) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		errc <- Run(ctx, Config{
			Server: srv.addr, Token: srv.token, DataDir: dataDir, Name: "dev-1", Cgroup: scope,
			CleanupOnExit: true, Logger: slog.New(slog.DiscardHandler), Addresses: []string{"10.99.0.1"},
			PostureEvery: 300 * time.Millisecond, CountersEvery: 200 * time.Millisecond,
		})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-errc; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
}

func copyBinary(t *testing.T, name string) (string, string) {
	t.Helper()
	src, err := exec.LookPath(name)
	if err != nil {
		t.Skip("no " + name)
	}
	b, _ := os.ReadFile(src)
	b = append(b, []byte(t.Name())...) // a hash no other file has
	path := filepath.Join(t.TempDir(), name+"-copy")
	if err := os.WriteFile(path, b, 0o755); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(b)
	return path, hex.EncodeToString(sum[:])
}

func waitExit(t *testing.T, cmd *exec.Cmd, within time.Duration) error {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		return err
	case <-time.After(within):
		cmd.Process.Kill()
		<-done
		t.Fatalf("%s still running after %v", cmd.Path, within)
		return nil
	}
}

func killedBySIGKILL(err error) bool {
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		return false
	}
	ws, ok := ee.Sys().(syscall.WaitStatus)
	return ok && ws.Signaled() && ws.Signal() == syscall.SIGKILL
}

// TestAgentAgainstServer runs the whole agent on a test cgroup against a
// TLS server: enrollment, Hello with the kernel's capabilities, a table that
// denies a connect, enriched events, a kill instruction, kill-on-exec of an
// executable the kernel did not know, and a restart that remembers it all.
func TestAgentAgainstServer(t *testing.T) {
	testenv.RequireRoot(t)
	cg := testenv.NewCgroup(t)
	srv := newServer(t)
	dataDir := t.TempDir()
	startAgent(t, srv, dataDir, cg.Path)

	hello := srv.expect(t, "hello", func(m *vigilpb.AgentMessage) bool { return m.GetHello() != nil }).GetHello()
	if hello.Name != "dev-1" || hello.Scope != cg.Path || !hello.Capabilities.Hooks["cgroup/connect4"] || hello.Posture.GetKernelVersion() == "" {
		t.Fatalf("hello %v", hello)
	}
	if len(hello.Addresses) != 1 || hello.Addresses[0] != "10.99.0.1" {
		t.Errorf("hello addresses %v, want the --address override", hello.Addresses)
	}

	// A table denying TCP to a loopback port.
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	port := lis.Addr().(*net.TCPAddr).Port
	srv.send(&vigilpb.ServerMessage{Body: &vigilpb.ServerMessage_Table{Table: &vigilpb.VerdictTable{
		Version: 1, DefaultEgress: vigilpb.Verdict_VERDICT_ALLOW, FailMode: vigilpb.FailMode_FAIL_MODE_LAST_KNOWN,
		Egress: []*vigilpb.EgressEntry{{RuleId: 7, Destination: "127.0.0.1/32", PortMin: uint32(port), PortMax: uint32(port),
			Protocol: vigilpb.Protocol_PROTOCOL_TCP, Verdict: vigilpb.Verdict_VERDICT_DENY}},
	}}})
	ack := srv.expect(t, "table ack", func(m *vigilpb.AgentMessage) bool { return m.GetTableAck() != nil }).GetTableAck()
	if ack.Version != 1 || ack.Error != "" {
		t.Fatalf("table ack %v", ack)
	}

	bash, bashSum := copyBinary(t, "bash")
	out, err := cg.Command(t, bash, "-c", fmt.Sprintf("exec 3<>/dev/tcp/127.0.0.1/%d", port)).CombinedOutput()
	if err == nil {
		t.Fatalf("connect to denied port succeeded: %s", out)
	}
	deny := srv.expect(t, "denied connect event", func(m *vigilpb.AgentMessage) bool {
		for _, ev := range m.GetEvents().GetEvents() {
			c := ev.GetConnection()
			if ev.Kind == vigilpb.EventKind_EVENT_KIND_CONNECT && c.GetRemotePort() == uint32(port) && c.GetVerdict() == vigilpb.Verdict_VERDICT_DENY {
				return true
			}
		}
		return false
	})
	for _, ev := range deny.GetEvents().GetEvents() {
		if ev.GetConnection().GetRemotePort() == uint32(port) {
			if ev.Process.GetExecutable() != bash || ev.Process.GetSha256() != bashSum || ev.Connection.RuleId != 7 || ev.Agent != "dev-1" {
				t.Errorf("connect event %v, want process %s (%s) and rule 7", ev, bash, bashSum)
			}
		}
	}

	// A kill instruction for a process in scope.
	sleeper := cg.Command(t, "sleep", "30")
	if err := sleeper.Start(); err != nil {
		t.Fatal(err)
	}
	srv.expect(t, "sleeper exec event", func(m *vigilpb.AgentMessage) bool {
		for _, ev := range m.GetEvents().GetEvents() {
			if ev.Kind == vigilpb.EventKind_EVENT_KIND_EXEC && ev.Process.GetPid() == uint32(sleeper.Process.Pid) {
				return true
			}
		}
		return false
	})
	srv.send(&vigilpb.ServerMessage{Body: &vigilpb.ServerMessage_Instruction{Instruction: &vigilpb.Instruction{
		Seq: 1, Kind: vigilpb.InstructionKind_INSTRUCTION_KIND_KILL, Pid: uint32(sleeper.Process.Pid)}}})
	iack := srv.expect(t, "instruction ack", func(m *vigilpb.AgentMessage) bool { return m.GetAck() != nil }).GetAck()
	if iack.Seq != 1 || iack.Outcome != vigilpb.InstructionOutcome_INSTRUCTION_OUTCOME_DONE {
		t.Fatalf("kill ack %v", iack)
	}
	if err := waitExit(t, sleeper, 5*time.Second); !killedBySIGKILL(err) {
		t.Errorf("sleeper ended with %v, want SIGKILL", err)
	}

	// Kill-on-exec of a file the agent never saw: the first exec is killed
	// from user space, later ones by the kernel.
	evil, evilSum := copyBinary(t, "sleep")
	srv.send(&vigilpb.ServerMessage{Body: &vigilpb.ServerMessage_Diff{Diff: &vigilpb.TableDiff{
		BaseVersion: 1, Version: 2, KillOnExecAdded: []string{evilSum}, FailMode: vigilpb.FailMode_FAIL_MODE_LAST_KNOWN}}})
	ack = srv.expect(t, "diff ack", func(m *vigilpb.AgentMessage) bool { return m.GetTableAck() != nil }).GetTableAck()
	if ack.Version != 2 || ack.Error != "" {
		t.Fatalf("diff ack %v", ack)
	}
	for i := 0; i < 2; i++ {
		cmd := cg.Command(t, evil, "30")
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		if err := waitExit(t, cmd, 5*time.Second); !killedBySIGKILL(err) {
			t.Errorf("exec %d of a listed executable ended with %v, want SIGKILL", i+1, err)
		}
		// The kernel learns the identity by a table write that follows the
		// user-space kill; give it that time.
		time.Sleep(500 * time.Millisecond)
	}

	// Kernel counters reach the server, and show that the second exec was
	// killed by the kernel itself.
	srv.expect(t, "counters with a kernel kill-on-exec", func(m *vigilpb.AgentMessage) bool {
		c := m.GetCounters()
		return c.GetEventsEmitted() > 0 && c.GetVerdicts()["kill-on-exec"] > 0
	})

	// A posture change (a new listening socket) is sent without asking.
	listener := fmt.Sprintf("tcp:%d", listen(t, "tcp4", "127.0.0.1:0"))
	srv.expect(t, "posture with "+listener, func(m *vigilpb.AgentMessage) bool {
		return slices.Contains(m.GetPosture().GetListening(), listener)
	})
}

// TestAgentRestartKeepsState stops an agent and starts another on the same
// data directory: no second enrollment, the table version and the last
// instruction are remembered, and events not acknowledged are sent again.
func TestAgentRestartKeepsState(t *testing.T) {
	testenv.RequireRoot(t)
	cg := testenv.NewCgroup(t)
	srv := newServer(t)
	dataDir := t.TempDir()

	runFor(t, srv, dataDir, cg.Path, func() {
		srv.expect(t, "hello", func(m *vigilpb.AgentMessage) bool { return m.GetHello() != nil })
		srv.send(&vigilpb.ServerMessage{Body: &vigilpb.ServerMessage_Table{Table: &vigilpb.VerdictTable{
			Version: 5, DefaultEgress: vigilpb.Verdict_VERDICT_ALLOW}}})
		srv.expect(t, "table ack", func(m *vigilpb.AgentMessage) bool { return m.GetTableAck() != nil })
		srv.send(&vigilpb.ServerMessage{Body: &vigilpb.ServerMessage_Instruction{Instruction: &vigilpb.Instruction{
			Seq: 3, Kind: vigilpb.InstructionKind_INSTRUCTION_KIND_RELEASE}}})
		srv.expect(t, "ack", func(m *vigilpb.AgentMessage) bool { return m.GetAck() != nil })

		cmd := cg.Command(t, "true")
		cmd.Run()
		srv.expect(t, "events", func(m *vigilpb.AgentMessage) bool { return len(m.GetEvents().GetEvents()) > 0 })
	})

	srv.token = "vgl1.spent.token." + srv.ca.Fingerprint() // a second enrollment would fail
	runFor(t, srv, dataDir, cg.Path, func() {
		hello := srv.expect(t, "hello", func(m *vigilpb.AgentMessage) bool { return m.GetHello() != nil }).GetHello()
		if hello.TableVersion != 5 || hello.LastInstructionSeq != 3 {
			t.Errorf("hello after restart: table %d, last instruction %d; want 5 and 3", hello.TableVersion, hello.LastInstructionSeq)
		}
		batch := srv.expect(t, "replayed events", func(m *vigilpb.AgentMessage) bool { return len(m.GetEvents().GetEvents()) > 0 })
		if batch.GetEvents().Events[0].Seq != 1 {
			t.Errorf("replay starts at seq %d, want 1 (nothing was acknowledged)", batch.GetEvents().Events[0].Seq)
		}
	})
	if _, err := os.Stat(dataplane.PinPathFor(cg.Path)); !os.IsNotExist(err) {
		t.Errorf("pins left after --cleanup-on-exit: %v", err)
	}
}

// runFor runs an agent while body runs, then stops it.
func runFor(t *testing.T, srv *server, dataDir, scope string, body func()) error {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		errc <- Run(ctx, Config{
			Server: srv.addr, Token: srv.token, DataDir: dataDir, Name: "dev-1", Cgroup: scope,
			CleanupOnExit: true, Logger: slog.New(slog.DiscardHandler), PostureEvery: time.Hour,
		})
	}()
	body()
	cancel()
	err := <-errc
	if err != nil && !strings.Contains(err.Error(), "context canceled") {
		t.Errorf("Run: %v", err)
	}
	return err
}

// connectFrom runs a TCP connect to addr from inside the cgroup and reports
// whether it succeeded.
func connectFrom(t *testing.T, cg *testenv.Cgroup, host string, port int) bool {
	t.Helper()
	script := fmt.Sprintf("exec 3<>/dev/tcp/%s/%d", host, port)
	return cg.Command(t, "bash", "-c", script).Run() == nil
}

func listen(t *testing.T, network, addr string) int {
	t.Helper()
	lis, err := net.Listen(network, addr)
	if err != nil {
		testenv.SkipOrFail(t, "listen "+addr+": "+err.Error())
	}
	t.Cleanup(func() { lis.Close() })
	go func() {
		for {
			c, err := lis.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	return lis.Addr().(*net.TCPAddr).Port
}

// TestFailModesWhileOffline loses the server and checks the kernel: closed
// denies every egress but to the server's address, open turns denies into
// audits.
func TestFailModesWhileOffline(t *testing.T) {
	testenv.RequireRoot(t)
	tests := []struct {
		name       string
		mode       vigilpb.FailMode
		wantServer bool // a connect to the server's address and port (127.0.0.1)
		wantPort   bool // a connect to another port of the server's address
		wantOther  bool // a connect to ::1, which no rule names
		wantDenied bool // a connect to the port the table denies
	}{
		{"closed", vigilpb.FailMode_FAIL_MODE_CLOSED, true, false, false, false},
		{"open", vigilpb.FailMode_FAIL_MODE_OPEN, true, true, true, true},
		{"last known", vigilpb.FailMode_FAIL_MODE_LAST_KNOWN, true, true, true, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cg := testenv.NewCgroup(t)
			srv := newServer(t)
			startAgent(t, srv, t.TempDir(), cg.Path)
			v4 := listen(t, "tcp4", "127.0.0.1:0")
			denied := listen(t, "tcp4", "127.0.0.1:0")
			v6 := listen(t, "tcp6", "[::1]:0")

			srv.expect(t, "hello", func(m *vigilpb.AgentMessage) bool { return m.GetHello() != nil })
			srv.send(&vigilpb.ServerMessage{Body: &vigilpb.ServerMessage_Table{Table: &vigilpb.VerdictTable{
				Version: 1, DefaultEgress: vigilpb.Verdict_VERDICT_ALLOW, FailMode: tt.mode,
				Egress: []*vigilpb.EgressEntry{{RuleId: 3, Destination: "127.0.0.1/32", PortMin: uint32(denied), PortMax: uint32(denied),
					Protocol: vigilpb.Protocol_PROTOCOL_TCP, Verdict: vigilpb.Verdict_VERDICT_DENY}},
			}}})
			srv.expect(t, "table ack", func(m *vigilpb.AgentMessage) bool { return m.GetTableAck() != nil })
			if !connectFrom(t, cg, "::1", v6) || connectFrom(t, cg, "127.0.0.1", denied) {
				t.Fatal("online table not in force")
			}

			srv.stop()
			// Something else now answers on the server's port; the agent
			// stays offline, since it does not speak the protocol.
			serverPort := listen(t, "tcp4", srv.addr)
			want := func() bool {
				return connectFrom(t, cg, "127.0.0.1", denied) == tt.wantDenied && connectFrom(t, cg, "::1", v6) == tt.wantOther
			}
			for deadline := time.Now().Add(5 * time.Second); !want() && time.Now().Before(deadline); {
				time.Sleep(50 * time.Millisecond)
			}
			if got := connectFrom(t, cg, "::1", v6); got != tt.wantOther {
				t.Errorf("offline connect to ::1 succeeded=%v, want %v", got, tt.wantOther)
			}
			if got := connectFrom(t, cg, "127.0.0.1", denied); got != tt.wantDenied {
				t.Errorf("offline connect to the denied port succeeded=%v, want %v", got, tt.wantDenied)
			}
			if got := connectFrom(t, cg, "127.0.0.1", v4); got != tt.wantPort {
				t.Errorf("offline connect to another port of the server's address succeeded=%v, want %v", got, tt.wantPort)
			}
			if got := connectFrom(t, cg, "127.0.0.1", serverPort); got != tt.wantServer {
				t.Errorf("offline connect to the server succeeded=%v, want %v", got, tt.wantServer)
			}
		})
	}
}
