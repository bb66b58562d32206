package api

import (
	"context"
	"crypto/tls"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	vigilpb "github.com/vigilsec/vigil/gen/vigil/v1"
	"github.com/vigilsec/vigil/server/pki"
	"github.com/vigilsec/vigil/server/store"
)

func TestMain(m *testing.M) {
	if runHelper() {
		return
	}
	goleak.VerifyTestMain(m)
}

func wantCode(t *testing.T, err error, code codes.Code) {
	t.Helper()
	if status.Code(err) != code {
		t.Fatalf("got %v, want code %s", err, code)
	}
}

func TestCallerAuthentication(t *testing.T) {
	ts := runServer(t, t.TempDir())
	other, err := pki.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	agentCert := ts.enroll(t, "laptop")
	ctx := context.Background()

	tests := []struct {
		name string
		cert *tls.Certificate
		want codes.Code
	}{
		{name: "no client certificate", cert: nil, want: codes.Unauthenticated},
		{name: "certificate from another CA", cert: adminCert(t, other, pki.RoleAdmin), want: codes.Unavailable},
		{name: "agent certificate on the admin service", cert: agentCert, want: codes.PermissionDenied},
		{name: "viewer", cert: adminCert(t, ts.ca, pki.RoleViewer), want: codes.OK},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			client := vigilpb.NewAdminServiceClient(dial(t, ts.addr, ts.ca.CertPEM(), tt.cert))
			_, err := client.ListAgents(ctx, &vigilpb.ListAgentsRequest{})
			wantCode(t, err, tt.want)
		})
	}
}

func TestRoles(t *testing.T) {
	ts := runServer(t, t.TempDir())
	ts.enroll(t, "laptop")
	ctx := context.Background()
	viewer, operator, admin := ts.admin(t, pki.RoleViewer), ts.admin(t, pki.RoleOperator), ts.admin(t, pki.RoleAdmin)
	kill := &vigilpb.KillRequest{Agent: "laptop", Pid: 42}
	apply := &vigilpb.ApplyPolicyRequest{Document: &vigilpb.PolicyDocument{Filename: "p.yaml"}}

	tests := []struct {
		name string
		call func() error
		want codes.Code
	}{
		{name: "viewer reads", call: func() error {
			_, err := viewer.QueryEvents(ctx, &vigilpb.QueryEventsRequest{})
			return err
		}, want: codes.OK},
		{name: "viewer kills", call: func() error {
			_, err := viewer.Kill(ctx, kill)
			return err
		}, want: codes.PermissionDenied},
		{name: "viewer creates a token", call: func() error {
			_, err := viewer.CreateToken(ctx, &vigilpb.CreateTokenRequest{})
			return err
		}, want: codes.PermissionDenied},
		{name: "operator kills", call: func() error {
			_, err := operator.Kill(ctx, kill)
			return err
		}, want: codes.OK},
		{name: "operator applies policy", call: func() error {
			_, err := operator.ApplyPolicy(ctx, apply)
			return err
		}, want: codes.PermissionDenied},
		{name: "operator revokes", call: func() error {
			_, err := operator.RevokeAgent(ctx, &vigilpb.RevokeAgentRequest{Name: "laptop"})
			return err
		}, want: codes.PermissionDenied},
		{name: "admin applies policy", call: func() error {
			_, err := admin.ApplyPolicy(ctx, apply)
			return err
		}, want: codes.OK},
		{name: "admin kills on an unknown agent", call: func() error {
			_, err := admin.Kill(ctx, &vigilpb.KillRequest{Agent: "nope", Pid: 1})
			return err
		}, want: codes.NotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { wantCode(t, tt.call(), tt.want) })
	}

	audit, err := ts.st.Audit()
	if err != nil {
		t.Fatal(err)
	}
	var denied []string
	for _, rec := range audit {
		if rec.Result == codes.PermissionDenied.String() {
			denied = append(denied, rec.Actor+" "+rec.Action)
		}
	}
	want := "[admin/tester(viewer) Kill admin/tester(viewer) CreateToken " +
		"admin/tester(operator) ApplyPolicy admin/tester(operator) RevokeAgent]"
	if fmt.Sprint(denied) != want || len(audit) < 8 {
		t.Fatalf("audit log holds %d records, refusals %v; want every call, refusals %s", len(audit), denied, want)
	}
}

func TestEnrollment(t *testing.T) {
	ts := runServer(t, t.TempDir())
	ctx := context.Background()
	client := vigilpb.NewEnrollmentServiceClient(dial(t, ts.addr, ts.ca.CertPEM(), nil))
	_, der := csr(t)

	used := ts.token(t)
	if _, err := client.Enroll(ctx, &vigilpb.EnrollRequest{Token: used, Name: "first", CsrDer: der}); err != nil {
		t.Fatal(err)
	}
	expired := ts.token(t)
	expireToken(t, ts.st, expired)
	other, _ := pki.Open(t.TempDir())
	foreign := ts.token(t)[:len(used)-64] + other.Fingerprint()
	unknown := used[:5] + "0000000000000000" + used[21:]

	tests := []struct {
		name  string
		token string
		agent string
		want  codes.Code
	}{
		{name: "malformed", token: "vgl1.zz", agent: "a", want: codes.InvalidArgument},
		{name: "another CA", token: foreign, agent: "a", want: codes.FailedPrecondition},
		{name: "unknown", token: unknown, agent: "a", want: codes.Unauthenticated},
		{name: "expired", token: expired, agent: "a", want: codes.FailedPrecondition},
		{name: "reused", token: used, agent: "second", want: codes.FailedPrecondition},
		{name: "bad name", token: ts.token(t), agent: "../x", want: codes.InvalidArgument},
		{name: "name already enrolled", token: ts.token(t), agent: "first", want: codes.AlreadyExists},
		{name: "valid", token: ts.token(t), agent: "second", want: codes.OK},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := client.Enroll(ctx, &vigilpb.EnrollRequest{Token: tt.token, Name: tt.agent, CsrDer: der})
			wantCode(t, err, tt.want)
		})
	}
}

func expireToken(t *testing.T, st *store.Store, text string) {
	t.Helper()
	tok, err := parseToken(text)
	if err != nil {
		t.Fatal(err)
	}
	err = st.PutToken(tok.id, store.TokenRecord{SecretHash: secretHash(tok.secret), Expires: time.Now().Add(-time.Minute)})
	if err != nil {
		t.Fatal(err)
	}
}

func TestServerChainCarriesPinnedCA(t *testing.T) {
	ts := runServer(t, t.TempDir())
	conn, err := tls.Dial("tcp", ts.addr, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"h2"}})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	chain := conn.ConnectionState().PeerCertificates
	if len(chain) != 2 || pki.Fingerprint(chain[1].Raw) != ts.ca.Fingerprint() {
		t.Fatalf("server sent %d certificates; want the leaf and the CA the tokens pin", len(chain))
	}
}

func TestEnrollGuessingIsLimited(t *testing.T) {
	ts := runServer(t, t.TempDir())
	client := vigilpb.NewEnrollmentServiceClient(dial(t, ts.addr, ts.ca.CertPEM(), nil))
	guess := "vgl1.0000000000000000.00000000000000000000000000000000." + ts.ca.Fingerprint()
	var last error
	for range enrollBurst + 1 {
		_, last = client.Enroll(context.Background(), &vigilpb.EnrollRequest{Token: guess, Name: "x"})
	}
	wantCode(t, last, codes.ResourceExhausted)
}

func TestAgentIdentity(t *testing.T) {
	ts := runServer(t, t.TempDir())
	laptop := ts.enroll(t, "laptop")
	ts.enroll(t, "server")

	t.Run("claims another name", func(t *testing.T) {
		a := ts.connect(t, laptop, "server")
		wantCode(t, a.end(t), codes.PermissionDenied)
	})
	t.Run("own name", func(t *testing.T) {
		a := ts.connect(t, laptop, "laptop")
		if a.next(t).GetTable() == nil {
			t.Fatal("first server message is not the full table")
		}
	})
	t.Run("admin certificate on the agent service", func(t *testing.T) {
		a := ts.connect(t, adminCert(t, ts.ca, pki.RoleAdmin), "tester")
		wantCode(t, a.end(t), codes.PermissionDenied)
	})
}

func TestEventsDedupe(t *testing.T) {
	ts := runServer(t, t.TempDir())
	a := ts.connect(t, ts.enroll(t, "laptop"), "laptop")
	a.next(t) // table

	steps := []struct {
		name     string
		seqs     []uint64
		wantAck  uint64
		ingested int
	}{
		{name: "first batch", seqs: []uint64{1, 2, 3}, wantAck: 3, ingested: 3},
		{name: "replayed batch", seqs: []uint64{1, 2, 3}, wantAck: 3, ingested: 3},
		{name: "partly replayed", seqs: []uint64{3, 4}, wantAck: 4, ingested: 4},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			a.send(t, batch(st.seqs...))
			if got := a.next(t).GetEventsAck().GetSeq(); got != st.wantAck {
				t.Fatalf("ack %d, want %d", got, st.wantAck)
			}
			if got := ts.engine.ingestedCount(); got != st.ingested {
				t.Fatalf("engine ingested %d events, want %d", got, st.ingested)
			}
		})
	}
	resp, err := ts.admin(t, pki.RoleViewer).QueryEvents(context.Background(), &vigilpb.QueryEventsRequest{Agent: "laptop"})
	if err != nil || len(resp.Events) != 4 {
		t.Fatalf("stored events: %d err %v, want 4", len(resp.GetEvents()), err)
	}
}

func TestInstructions(t *testing.T) {
	ts := runServer(t, t.TempDir())
	cert := ts.enroll(t, "laptop")
	operator := ts.admin(t, pki.RoleOperator)
	ctx := context.Background()

	// Offline: queued, outcome unspecified.
	for pid := uint32(10); pid < 12; pid++ {
		resp, err := operator.Kill(ctx, &vigilpb.KillRequest{Agent: "laptop", Pid: pid})
		if err != nil || resp.Outcome != vigilpb.InstructionOutcome_INSTRUCTION_OUTCOME_UNSPECIFIED {
			t.Fatalf("offline kill: %v err %v", resp, err)
		}
	}

	// Reconnect: table, then the pending instructions in order.
	a := ts.connect(t, cert, "laptop")
	a.next(t)
	for want := uint64(1); want <= 2; want++ {
		ins := a.next(t).GetInstruction()
		if ins.GetSeq() != want || ins.GetPid() != uint32(9+want) {
			t.Fatalf("pending instruction %v, want seq %d", ins, want)
		}
		a.send(t, ack(want))
	}

	// Online: the call waits for the agent's acknowledgement.
	go func() {
		ins := (<-a.msgs).GetInstruction()
		a.stream.Send(&vigilpb.AgentMessage{Body: &vigilpb.AgentMessage_Ack{Ack: &vigilpb.InstructionAck{
			Seq: ins.GetSeq(), Outcome: vigilpb.InstructionOutcome_INSTRUCTION_OUTCOME_DONE, LatencyUs: 17}}})
	}()
	resp, err := operator.Cut(ctx, &vigilpb.CutRequest{Agent: "laptop", Peer: "10.1.2.3:443"})
	done := vigilpb.InstructionOutcome_INSTRUCTION_OUTCOME_DONE
	if err != nil || resp.Seq != 3 || resp.Outcome != done || resp.LatencyUs != 17 {
		t.Fatalf("online cut: %v err %v", resp, err)
	}
	if len(ts.engine.cuts) != 1 || ts.engine.cuts[0] != "laptop 10.1.2.3:443" {
		t.Fatalf("engine cuts %v, want the cut recorded in the table", ts.engine.cuts)
	}
	pending, _ := ts.st.PendingInstructions("laptop")
	if len(pending) != 0 {
		t.Fatalf("pending after acks: %v", pending)
	}
}

func ack(seq uint64) *vigilpb.AgentMessage {
	return &vigilpb.AgentMessage{Body: &vigilpb.AgentMessage_Ack{Ack: &vigilpb.InstructionAck{
		Seq: seq, Outcome: vigilpb.InstructionOutcome_INSTRUCTION_OUTCOME_DONE}}}
}

func TestRevoke(t *testing.T) {
	dir := t.TempDir()
	ts := runServer(t, dir)
	cert := ts.enroll(t, "laptop")
	a := ts.connect(t, cert, "laptop")
	a.next(t)

	revoke := &vigilpb.RevokeAgentRequest{Name: "laptop"}
	if _, err := ts.admin(t, pki.RoleAdmin).RevokeAgent(context.Background(), revoke); err != nil {
		t.Fatal(err)
	}
	wantCode(t, a.end(t), codes.PermissionDenied)
	ts.engine.mu.Lock()
	revoked := fmt.Sprint(ts.engine.revoked)
	ts.engine.mu.Unlock()
	if revoked != "[laptop]" {
		t.Errorf("engine told of revocations %s, want [laptop]", revoked)
	}

	ts.stop()
	ts = runServer(t, dir)
	again := ts.connect(t, cert, "laptop")
	wantCode(t, again.end(t), codes.PermissionDenied)
}

func TestFollowEvents(t *testing.T) {
	ts := runServer(t, t.TempDir())
	a := ts.connect(t, ts.enroll(t, "laptop"), "laptop")
	a.next(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	follow, err := ts.admin(t, pki.RoleViewer).FollowEvents(ctx, &vigilpb.FollowEventsRequest{Agent: "laptop"})
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond) // let the subscription register

	a.send(t, batch(1))
	ev, err := follow.Recv()
	if err != nil || ev.GetSeq() != 1 || ev.GetAgent() != "laptop" || ev.GetServerId() == "" {
		t.Fatalf("followed event %v err %v", ev, err)
	}
}

func TestRestartKeepsState(t *testing.T) {
	dir := t.TempDir()
	ts := runServer(t, dir)
	cert := ts.enroll(t, "laptop")
	a := ts.connect(t, cert, "laptop")
	a.next(t)
	a.send(t, batch(1, 2))
	a.next(t)
	ts.stop()

	ts = runServer(t, dir)
	a = ts.connect(t, cert, "laptop")
	a.next(t)
	a.send(t, batch(1, 2, 3))
	if got := a.next(t).GetEventsAck().GetSeq(); got != 3 {
		t.Fatalf("ack after restart %d, want 3", got)
	}
	if n := ts.engine.ingestedCount(); n != 1 {
		t.Fatalf("engine ingested %d events after restart, want only the new one", n)
	}
	if _, err := filepath.Abs(dir); err != nil {
		t.Fatal(err)
	}
}

func TestAgentReports(t *testing.T) {
	ts := runServer(t, t.TempDir())
	a := ts.connect(t, ts.enroll(t, "laptop"), "laptop")
	first := a.next(t).GetTable().GetVersion()

	a.send(t, &vigilpb.AgentMessage{Body: &vigilpb.AgentMessage_TableAck{TableAck: &vigilpb.TableAck{Version: first}}})
	a.send(t, &vigilpb.AgentMessage{Body: &vigilpb.AgentMessage_Counters{Counters: &vigilpb.Counters{EventsLost: 9}}})
	a.send(t, &vigilpb.AgentMessage{Body: &vigilpb.AgentMessage_Posture{Posture: &vigilpb.Posture{Hostname: "h"}}})
	// A second hello asks for a full table again.
	a.send(t, &vigilpb.AgentMessage{Body: &vigilpb.AgentMessage_Hello{Hello: &vigilpb.Hello{Name: "laptop"}}})
	if v := a.next(t).GetTable().GetVersion(); v <= first {
		t.Fatalf("second hello got table %d, want a new full table after %d", v, first)
	}

	resp, err := ts.admin(t, pki.RoleViewer).ListAgents(context.Background(), &vigilpb.ListAgentsRequest{})
	if err != nil || len(resp.Agents) != 1 {
		t.Fatalf("list agents: %v err %v", resp, err)
	}
	got := resp.Agents[0]
	if !got.Online || got.TableVersion != first || got.EventsLost != 9 || got.Posture.GetHostname() != "h" ||
		got.Level != "high" {
		t.Fatalf("agent %v: want online, table %d, 9 lost, posture and level", got, first)
	}
	ts.engine.mu.Lock()
	defer ts.engine.mu.Unlock()
	if ts.engine.acked["laptop"] != first {
		t.Fatalf("engine saw table ack %d, want %d", ts.engine.acked["laptop"], first)
	}
}
