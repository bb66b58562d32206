package decide

import (
	"context"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	vigilpb "github.com/vigilsec/vigil/gen/vigil/v1"
)

var (
	benchOnce   sync.Once
	benchShared *Engine
)

// sharedBenchEngine builds the 1,000-agent engine once for every benchmark
// round; the rounds only flip a level or a hash back and forth, which keeps
// the measured work the same.
func sharedBenchEngine(b *testing.B) *Engine {
	benchOnce.Do(func() { benchShared = benchEngine(b, 1000) })
	if benchShared == nil {
		b.Fatal("bench engine setup failed")
	}
	return benchShared
}

// benchEngine returns an engine with the scenario policy, one service host
// and n device agents online.
func benchEngine(b *testing.B, n int) *Engine {
	b.Helper()
	e, err := New(Config{KV: newMemKV(), Sink: newRecSink()})
	if err != nil {
		b.Fatal(err)
	}
	src, err := os.ReadFile("testdata/scenario.yaml")
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	if _, perrs, err := e.ApplyPolicy(ctx, &vigilpb.PolicyDocument{Filename: "s.yaml", Yaml: string(src)}, "bench"); err != nil || len(perrs) > 0 {
		b.Fatal(perrs, err)
	}
	if _, err := e.AgentOnline(ctx, "crm-host", &vigilpb.Hello{Addresses: []string{"10.200.0.1"}}); err != nil {
		b.Fatal(err)
	}
	for i := 0; i < n; i++ {
		addr := fmt.Sprintf("10.%d.%d.%d", 1+i/65536, i/256%256, i%256+0)
		if _, err := e.AgentOnline(ctx, fmt.Sprintf("d-%d", i), &vigilpb.Hello{Addresses: []string{addr}}); err != nil {
			b.Fatal(err)
		}
	}
	return e
}

// BenchmarkRecompute1000Agents measures one level change of one device among
// 1,000: recompiling the affected tables (the device's and the service
// host's, whose ingress lists every device) and diffing them.
func BenchmarkRecompute1000Agents(b *testing.B) {
	e := sharedBenchEngine(b)
	ctx := context.Background()
	levels := []string{"low", "high"}
	b.ResetTimer()
	start := time.Now()
	for i := 0; i < b.N; i++ {
		_, err := e.Report(ctx, &vigilpb.ReportRequest{Entity: "device/d-500", Level: levels[i%2], Source: "bench"})
		if err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(time.Since(start).Milliseconds())/float64(b.N), "ms/change")
}

// BenchmarkRecomputeAll1000Agents measures recompiling and diffing every
// table of 1,000 agents, as a policy change does: a kill-on-exec hash comes
// and goes, changing every table.
func BenchmarkRecomputeAll1000Agents(b *testing.B) {
	e := sharedBenchEngine(b)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		e.mu.Lock()
		o := &outbox{}
		if i%2 == 0 {
			e.killOnExec[fmt.Sprintf("%064d", 1)] = "bench"
		} else {
			delete(e.killOnExec, fmt.Sprintf("%064d", 1))
		}
		err := e.recompute(o, e.allAgents())
		e.mu.Unlock()
		if err != nil {
			b.Fatal(err)
		}
	}
}
