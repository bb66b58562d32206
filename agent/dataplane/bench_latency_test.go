package dataplane

import (
	"fmt"
	"net"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/vigilsec/vigil/internal/testenv"
)

// BenchmarkDenyLatency measures how long a new deny takes to reach the
// kernel: from the call of ApplyTable with one deny more than the table in
// force to the first connect it refuses, in a loop of connects run by a
// helper process in the scope (its own process, so this one's compiling
// and collecting do not hold the observer back). Each iteration first
// applies the table without the deny (not measured). It reports the
// latency's p50-us and p99-us, and apply-p50-ms, how long the whole
// ApplyTable took (the swap, which is how long the deny took before the
// overlay). Tables hold 0 and 100k entries; percentiles need many
// iterations (-benchtime=100x).
func BenchmarkDenyLatency(b *testing.B) {
	testenv.RequireRoot(b)
	d, cg := openScopedB(b)
	target := benchListener(b)
	addr := netip.AddrPortFrom(netip.AddrFrom4(target.Addr), uint16(target.Port))
	for _, n := range []int{0, 100_000} {
		base := benchTable(n)
		next := base
		next.Egress = append(slices.Clone(base.Egress), EgressRule{RuleID: 1 << 30,
			Dest: netip.PrefixFrom(addr.Addr(), 32), PortMin: addr.Port(), PortMax: addr.Port(),
			Proto: ProtoTCP, Verdict: VerdictDeny})
		b.Run(fmt.Sprintf("entries-%dk", n/1000), func(b *testing.B) {
			var lat, apply []time.Duration
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				if err := d.ApplyTable(base); err != nil {
					b.Fatal(err)
				}
				cmd, out := startHelper(b, cg, "connect-until-eperm", addr.String())
				b.StartTimer()

				start := time.Now()
				if err := d.ApplyTable(next); err != nil {
					b.Fatal(err)
				}
				apply = append(apply, time.Since(start))
				line, err := out.ReadString('\n')
				if err != nil {
					b.Fatalf("helper: %v", err)
				}
				lat = append(lat, helperTime(b, line).Sub(start))
				_ = cmd.Wait()
			}
			reportPercentiles(b, lat, apply)
		})
	}
}

// openScopedB is openScoped for benchmarks: a data plane on a fresh scope
// whose events are drained as the agent would.
func openScopedB(b *testing.B) (*Dataplane, *testenv.Cgroup) {
	cg := testenv.NewCgroup(b)
	pin := testPinPath(cg.Path)
	b.Cleanup(func() { _ = Cleanup(pin) })
	d, err := Open(Config{CgroupPath: cg.Path, PinPath: pin})
	if err != nil {
		b.Fatalf("open: %v", err)
	}
	b.Cleanup(func() { d.Close() })
	drainEvents(b, d)
	return d, cg
}

func reportPercentiles(b *testing.B, lat, apply []time.Duration) {
	b.ReportMetric(float64(percentile(lat, 50).Microseconds()), "p50-us")
	b.ReportMetric(float64(percentile(lat, 99).Microseconds()), "p99-us")
	if apply != nil {
		b.ReportMetric(float64(percentile(apply, 50).Microseconds())/1000, "apply-p50-ms")
	}
}

// percentile returns the p-th percentile of ds (nearest rank).
func percentile(ds []time.Duration, p int) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	i := (len(s)*p + 99) / 100
	return s[max(i-1, 0)]
}

// BenchmarkCutLatency measures Cut: from the call to the moment a helper
// process in scope holding a connection to the peer sees it destroyed (the
// peer gets its reset at the same time). "idle" cuts alone; "during-swaps"
// cuts while tables of 10k entries are applied back to back, which Cut
// must not wait for. It reports p50-us and p99-us.
func BenchmarkCutLatency(b *testing.B) {
	testenv.RequireRoot(b)
	d, cg := openScopedB(b)
	peer := holdingListener(b)
	b.Run("idle", func(b *testing.B) { benchCuts(b, d, cg, peer) })

	stop := make(chan struct{})
	done := make(chan struct{})
	tables := []Table{benchTable(10_000), benchTable(9_999)}
	go func() {
		defer close(done)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			if err := d.ApplyTable(tables[i%2]); err != nil {
				b.Error(err)
				return
			}
		}
	}()
	b.Run("during-swaps", func(b *testing.B) { benchCuts(b, d, cg, peer) })
	close(stop)
	<-done
}

func benchCuts(b *testing.B, d *Dataplane, cg *testenv.Cgroup, peer netip.AddrPort) {
	var lat []time.Duration
	p := Peer{Addr: peer.Addr(), Port: peer.Port()}
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		cmd, out := startHelper(b, cg, "hold-until-reset", peer.String())
		b.StartTimer()

		start := time.Now()
		if n, err := d.Cut(p); err != nil || n != 1 {
			b.Fatalf("cut: %d sockets, %v", n, err)
		}
		line, err := out.ReadString('\n')
		if err != nil {
			b.Fatalf("helper: %v", err)
		}
		lat = append(lat, helperTime(b, line).Sub(start))

		b.StopTimer()
		_ = cmd.Wait()
		if err := d.Restore(p); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
	reportPercentiles(b, lat, nil)
}

// holdingListener accepts connections on loopback and holds them open.
func holdingListener(b *testing.B) netip.AddrPort {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				_, _ = c.Read(make([]byte, 1))
				c.Close()
			}()
		}
	}()
	return netip.MustParseAddrPort(ln.Addr().String())
}
