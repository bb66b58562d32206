//go:build integration

package reliability

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/vigilsec/vigil/agent/enroll"
	vigilpb "github.com/vigilsec/vigil/gen/vigil/v1"
	"github.com/vigilsec/vigil/internal/ctlclient"
	"github.com/vigilsec/vigil/internal/testenv"
	"github.com/vigilsec/vigil/tests/harness"
)

// rawCodec sends a request's bytes as they are, so a test can put bytes
// on the wire that are not a valid protobuf message.
type rawCodec struct{}

func (rawCodec) Marshal(v any) ([]byte, error) { return *v.(*[]byte), nil }
func (rawCodec) Unmarshal(data []byte, v any) error {
	*v.(*[]byte) = append([]byte(nil), data...)
	return nil
}
func (rawCodec) Name() string { return "proto" }

// admin dials the server with the admin credentials.
func admin(t *testing.T, s *harness.Server) *grpc.ClientConn {
	t.Helper()
	conn, err := ctlclient.Dial(s.Addr, s.Creds)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

func TestOversizedAndMalformedMessagesRefused(t *testing.T) {
	s := harness.StartServer(t)
	conn := admin(t, s)
	api := vigilpb.NewAdminServiceClient(conn)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	tests := []struct {
		name string
		call func() error
		want codes.Code
	}{
		{"policy larger than the message bound", func() error {
			doc := &vigilpb.PolicyDocument{Filename: "big.yaml", Yaml: strings.Repeat("#", 17<<20)}
			_, err := api.ApplyPolicy(ctx, &vigilpb.ApplyPolicyRequest{Document: doc})
			return err
		}, codes.ResourceExhausted},
		{"bytes that are not a protobuf message", func() error {
			req, reply := []byte{0xff, 0xff, 0xff, 0xff, 0x0f, 0x0a}, []byte(nil)
			return conn.Invoke(ctx, vigilpb.AdminService_ApplyPolicy_FullMethodName, &req, &reply,
				grpc.ForceCodec(rawCodec{}))
		}, codes.Internal},
		{"truncated field", func() error {
			req, reply := []byte{0x0a, 0x7f, 0x0a}, []byte(nil)
			return conn.Invoke(ctx, vigilpb.AdminService_ApplyPolicy_FullMethodName, &req, &reply,
				grpc.ForceCodec(rawCodec{}))
		}, codes.Internal},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.call(); status.Code(err) != tt.want {
				t.Fatalf("got %v, want %s", err, tt.want)
			}
			// The server is still there and nothing was applied.
			out := s.Ctl("policy", "history")
			if strings.Contains(out, "big.yaml") {
				t.Fatalf("refused policy stored:\n%s", out)
			}
		})
	}
}

// wrongSecret returns tok with its secret replaced by a random one.
func wrongSecret(tok string) string {
	parts := strings.Split(tok, ".")
	b := make([]byte, 16)
	rand.Read(b)
	parts[2] = hex.EncodeToString(b)
	return strings.Join(parts, ".")
}

func TestEnrollmentTokenGuessingIsLimited(t *testing.T) {
	s := harness.StartServer(t)
	good := s.Token()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	var codesSeen []codes.Code
	for range 12 {
		_, err := enroll.Enroll(ctx, s.Addr, wrongSecret(good), "guesser", t.TempDir())
		codesSeen = append(codesSeen, status.Code(err))
	}
	t.Logf("guess outcomes: %v", codesSeen)
	for i, c := range codesSeen {
		want := codes.Unauthenticated
		if i >= 10 {
			want = codes.ResourceExhausted
		}
		if c != want {
			t.Fatalf("guess %d: %s, want %s (all: %v)", i+1, c, want, codesSeen)
		}
	}

	// Even the right token waits until the guesser's budget refills.
	if _, err := enroll.Enroll(ctx, s.Addr, good, "guesser", t.TempDir()); status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("enroll right after guessing: %v, want resource exhausted", err)
	}
}

func TestAgentMessagesAreRateLimited(t *testing.T) {
	s := harness.StartServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	creds, err := enroll.Enroll(ctx, s.Addr, s.Token(), "chatty", t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient(s.Addr, grpc.WithTransportCredentials(credentials.NewTLS(creds.ClientTLS())))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	st, err := vigilpb.NewAgentServiceClient(conn).Connect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	hello := &vigilpb.AgentMessage{Body: &vigilpb.AgentMessage_Hello{Hello: &vigilpb.Hello{Name: "chatty"}}}
	if err := st.Send(hello); err != nil {
		t.Fatal(err)
	}
	recvTable(t, st)

	// 3000 messages past a burst of 2000 at 500 a second: the hello that
	// follows them is answered no sooner than two seconds later.
	const flood = 3000
	began := time.Now()
	for range flood {
		msg := &vigilpb.AgentMessage{Body: &vigilpb.AgentMessage_Counters{Counters: &vigilpb.Counters{}}}
		if err := st.Send(msg); err != nil {
			t.Fatalf("send: %v", err)
		}
	}
	if err := st.Send(hello); err != nil {
		t.Fatal(err)
	}
	recvTable(t, st)
	took := time.Since(began)
	t.Logf("%d messages and a hello answered after %s", flood, took.Round(time.Millisecond))
	if took < 1800*time.Millisecond {
		t.Errorf("answered after %s: the agent was not slowed to 500 messages a second", took)
	}
}

// recvTable reads server messages until a full table arrives.
func recvTable(t *testing.T, st vigilpb.AgentService_ConnectClient) {
	t.Helper()
	for {
		msg, err := st.Recv()
		if err != nil {
			t.Fatalf("receive: %v", err)
		}
		if msg.GetTable() != nil {
			return
		}
	}
}

func TestRevokedAgentCannotReconnect(t *testing.T) {
	testenv.RequireRoot(t)
	s := harness.StartServer(t)
	cg := testenv.NewCgroup(t)
	a := s.StartAgent(t, "revoked", cg)

	s.Ctl("agents", "revoke", a.Name)
	harness.WaitFor(t, 10*time.Second, "the revoked agent offline", func() bool {
		row := agentRow(t, s, a.Name)
		return row.Revoked && !row.Online
	})
	a.Proc.Stop(syscall.SIGKILL)
	a.Start()
	harness.WaitFor(t, 10*time.Second, "the server refusing the revoked agent", func() bool {
		return strings.Contains(a.Proc.Output(), "revoked")
	})
	if row := agentRow(t, s, a.Name); row.Online {
		t.Fatalf("revoked agent online again: %+v", row)
	}
}

func TestSecretsStayOutOfLogsAndFilesArePrivate(t *testing.T) {
	testenv.RequireRoot(t)
	s := harness.StartServer(t)
	s.Proc.Stop(syscall.SIGTERM)
	s.Args = []string{"--log-level", "debug"}
	s.Start()
	cg := testenv.NewCgroup(t)
	a := s.StartAgent(t, "discreet", cg, "--log-level", "debug")

	// A token used, one guessed wrong and one left unused all stay secret.
	unused := s.Token()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	enroll.Enroll(ctx, s.Addr, wrongSecret(unused), "intruder", t.TempDir())
	a.Proc.Stop(syscall.SIGTERM)
	s.Proc.Stop(syscall.SIGTERM)

	secrets := map[string]string{"PRIVATE KEY": "PRIVATE KEY"}
	for _, tok := range append(tokensIn(a.Args), unused) {
		secrets["token secret "+tok] = strings.Split(tok, ".")[2]
	}
	checkFiles(t, filepath.Join(s.Dir, "data"), secrets)
	checkFiles(t, a.Dir, secrets)
	if len(secrets) < 6 {
		t.Fatalf("found only %d secrets to look for", len(secrets))
	}

	logs, _ := filepath.Glob(filepath.Join(s.Dir, "*.log"))
	for _, f := range logs {
		b, _ := os.ReadFile(f)
		for what, secret := range secrets {
			if strings.Contains(string(b), secret) {
				t.Errorf("%s: contains %s", filepath.Base(f), what)
			}
		}
	}
	t.Logf("%d logs searched for %d secrets", len(logs), len(secrets))
}

// tokensIn returns the --token values of args.
func tokensIn(args []string) []string {
	var out []string
	for i, a := range args {
		if a == "--token" && i+1 < len(args) {
			out = append(out, args[i+1])
		}
	}
	return out
}

// checkFiles fails for a directory under root open to group or others,
// or a private key readable by them; it adds a line from the middle of
// each private key to secrets.
func checkFiles(t *testing.T, root string, secrets map[string]string) {
	t.Helper()
	filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			t.Errorf("walk %s: %v", path, err)
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return nil
		}
		mode := info.Mode().Perm()
		switch {
		case d.IsDir() && mode != 0o700:
			t.Errorf("%s: mode %o, want 700", path, mode)
		case strings.HasSuffix(path, ".key"):
			if mode != 0o600 {
				t.Errorf("%s: mode %o, want 600", path, mode)
			}
			b, _ := os.ReadFile(path)
			lines := strings.Split(strings.TrimSpace(string(b)), "\n")
			secrets["key "+path] = lines[len(lines)/2]
		case mode&0o022 != 0:
			t.Errorf("%s: mode %o is writable by others", path, mode)
		}
		return nil
	})
}
