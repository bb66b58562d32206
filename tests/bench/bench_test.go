package bench

import (
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"unicode"

	"github.com/vigilsec/vigil/internal/testenv"
)

func TestMain(m *testing.M) {
	MaybeRunWorker()
	os.Exit(m.Run())
}

// The Benchmark functions run each scenario once per iteration in quick
// mode and report every row as a metric; make bench runs the full ones.
func BenchmarkConnect(b *testing.B)    { benchScenario(b, ConnectOverhead) }
func BenchmarkObserve(b *testing.B)    { benchScenario(b, ObserveOverhead) }
func BenchmarkThroughput(b *testing.B) { benchScenario(b, EventThroughput) }
func BenchmarkReaction(b *testing.B)   { benchScenario(b, Reaction) }
func BenchmarkFanOut(b *testing.B)     { benchScenario(b, FanOut) }

func benchScenario(b *testing.B, run func(*Env, *Report) error) {
	testenv.RequireRoot(b)
	if _, err := RaiseFileLimit(1 << 18); err != nil {
		b.Fatal(err)
	}
	bin := buildBinaries(b)
	var rep *Report
	for b.Loop() {
		rep = &Report{}
		e := newTestEnv(b, bin)
		err := run(e, rep)
		e.Close()
		if err != nil {
			b.Fatal(err)
		}
	}
	for _, r := range rep.Rows {
		if r.Status == StatusUnavailable {
			b.Logf("%s %s unavailable: %s", r.Scenario, r.Variant, r.Note)
			continue
		}
		b.ReportMetric(r.Value, metricUnit(r.Scenario, r.Variant, r.Metric, r.Unit))
		if r.Ratio != 0 {
			b.ReportMetric(r.Ratio, metricUnit(r.Scenario, r.Variant, r.Metric, "x", r.Baseline))
		}
	}
}

func newTestEnv(tb testing.TB, bin string) *Env {
	e, err := NewEnv(slog.New(slog.DiscardHandler), bin, true)
	if err != nil {
		tb.Fatal(err)
	}
	return e
}

// metricUnit joins the words into one unit without white space, as
// testing.B.ReportMetric requires.
func metricUnit(words ...string) string {
	s := strings.Join(words, "_")
	return strings.Map(func(r rune) rune {
		if unicode.IsSpace(r) {
			return '_'
		}
		return r
	}, s)
}

var (
	buildOnce sync.Once
	binDir    string
	buildErr  error
)

// buildBinaries builds vigil-server, vigil-agent and vigilctl once.
func buildBinaries(tb testing.TB) string {
	buildOnce.Do(func() {
		if binDir, buildErr = os.MkdirTemp("", "vigil-bench-bin-"); buildErr != nil {
			return
		}
		cmd := exec.Command("go", "build", "-o", binDir+"/",
			"./cmd/vigil-server", "./cmd/vigil-agent", "./cmd/vigilctl")
		cmd.Dir = filepath.Join("..", "..")
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = err
			tb.Logf("go build: %s", out)
		}
	})
	if buildErr != nil {
		tb.Fatal(buildErr)
	}
	return binDir
}
