package decide

import (
	"context"
	"log/slog"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	vigilpb "github.com/vigilsec/vigil/gen/vigil/v1"
	"github.com/vigilsec/vigil/server/store"
)

const batchPolicy = `version: 1
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

// TestPolicyChangeStoresTablesInBatch applies a policy change that alters
// many agents' tables on the server's store, which writes them in one
// batch, and checks that every diff was pushed and a restarted engine
// restores every new table.
func TestPolicyChangeStoresTablesInBatch(t *testing.T) {
	st, err := store.Open(store.Options{Dir: t.TempDir(), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	kv, sink, ctx := st.Namespace("decide/"), newRecSink(), context.Background()
	e, err := New(Config{KV: kv, Sink: sink})
	if err != nil {
		t.Fatal(err)
	}
	apply(t, e, batchPolicy)
	agents := []string{"a1", "a2", "a3", "a4"}
	for _, a := range agents {
		if _, err := e.AgentOnline(ctx, a, &vigilpb.Hello{Name: a}); err != nil {
			t.Fatal(err)
		}
	}

	apply(t, e, strings.Replace(batchPolicy, `["23"]`, `["23", "443"]`, 1))
	again, err := New(Config{KV: kv, Sink: newRecSink()})
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range agents {
		want := e.agents[a].Table
		if n := len(sink.diffs[a]); n != 1 || sink.diffs[a][0].GetVersion() != want.GetVersion() {
			t.Errorf("%s: %d diffs pushed, want one to version %d", a, n, want.GetVersion())
		}
		if got := again.agents[a].Table; !proto.Equal(got, want) {
			t.Errorf("%s: restored table version %d, want version %d", a, got.GetVersion(), want.GetVersion())
		}
	}
}

func apply(t *testing.T, e *Engine, yaml string) {
	t.Helper()
	_, perrs, err := e.ApplyPolicy(context.Background(),
		&vigilpb.PolicyDocument{Filename: "batch.yaml", Yaml: yaml}, "admin")
	if err != nil || len(perrs) > 0 {
		t.Fatalf("apply: %v %v", perrs, err)
	}
}
