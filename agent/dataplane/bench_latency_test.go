package dataplane

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vigilsec/vigil/internal/testenv"
)

// BenchmarkDenyLatency measures how long a new deny takes to reach the
// kernel: from the call of ApplyTable with one deny more than the table in
// force to the first connect it refuses, in a loop of connects from this
// process, moved into the scope. Each iteration first applies the table
// without the deny (not measured). It reports the latency's p50-us and
// p99-us, and apply-p50-ms, how long the whole ApplyTable took (the swap,
// which is how long the deny took before the overlay). Tables hold 0 and
// 100k entries; percentiles need many iterations (-benchtime=100x).
func BenchmarkDenyLatency(b *testing.B) {
	d, target := benchScope(b)
	for _, n := range []int{0, 100_000} {
		base := benchTable(n)
		next := base
		next.Egress = append(slices.Clone(base.Egress), EgressRule{RuleID: 1 << 30,
			Dest: netip.MustParsePrefix("127.0.0.1/32"), PortMin: uint16(target.Port),
			PortMax: uint16(target.Port), Proto: ProtoTCP, Verdict: VerdictDeny})
		b.Run(fmt.Sprintf("entries-%dk", n/1000), func(b *testing.B) {
			var lat, apply []time.Duration
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				if err := d.ApplyTable(base); err != nil {
					b.Fatal(err)
				}
				refused := connectUntilRefused(b, target)
				b.StartTimer()

				start := time.Now()
				if err := d.ApplyTable(next); err != nil {
					b.Fatal(err)
				}
				apply = append(apply, time.Since(start))
				lat = append(lat, (<-refused).Sub(start))
			}
			reportPercentiles(b, lat, apply)
		})
	}
}

// connectUntilRefused connects to target in a loop, in the background,
// until a connect fails with EPERM; the channel then receives the time of
// that refusal. It returns once the first connect has succeeded.
func connectUntilRefused(b *testing.B, target *unix.SockaddrInet4) <-chan time.Time {
	running := make(chan struct{})
	refused := make(chan time.Time, 1)
	go func() {
		for first := true; ; first = false {
			err := connectOnce(target)
			if errors.Is(err, unix.EPERM) {
				refused <- time.Now()
				return
			}
			if err != nil {
				b.Error(err)
				refused <- time.Time{}
				return
			}
			if first {
				close(running)
			}
		}
	}()
	select {
	case <-running:
	case t := <-refused:
		b.Fatalf("connect refused before the deny (at %v)", t)
	}
	return refused
}

func connectOnce(target *unix.SockaddrInet4) error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	return unix.Connect(fd, target)
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

// BenchmarkCutLatency measures Cut: from the call to the moment the
// connection's owner in scope sees its socket destroyed, and with it the
// peer's reset. "idle" cuts alone; "during-swaps" cuts while tables of 10k
// entries are applied back to back, which Cut must not wait for. It
// reports p50-us and p99-us.
func BenchmarkCutLatency(b *testing.B) {
	d, _ := benchScope(b)
	peer := holdingListener(b)
	b.Run("idle", func(b *testing.B) { benchCuts(b, d, peer) })

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
	b.Run("during-swaps", func(b *testing.B) { benchCuts(b, d, peer) })
	close(stop)
	<-done
}

func benchCuts(b *testing.B, d *Dataplane, peer netip.AddrPort) {
	var lat []time.Duration
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		c, err := net.Dial("tcp", peer.String())
		if err != nil {
			b.Fatal(err)
		}
		ended := make(chan time.Time, 1)
		go func() {
			_, _ = c.Read(make([]byte, 1))
			ended <- time.Now()
		}()
		b.StartTimer()

		start := time.Now()
		if n, err := d.Cut(Peer{Addr: peer.Addr(), Port: peer.Port()}); err != nil || n != 1 {
			b.Fatalf("cut: %d sockets, %v", n, err)
		}
		lat = append(lat, (<-ended).Sub(start))
		b.StopTimer()
		c.Close()
		if err := d.Restore(Peer{Addr: peer.Addr(), Port: peer.Port()}); err != nil {
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

// benchScope moves this process into a fresh scope with the data plane
// loaded and returns it with a loopback listener outside any rule.
func benchScope(b *testing.B) (*Dataplane, *unix.SockaddrInet4) {
	testenv.RequireRoot(b)
	cg := testenv.NewCgroup(b)
	target := benchListener(b)
	enterCgroup(b, cg.Path)

	pin := testPinPath(cg.Path)
	b.Cleanup(func() { _ = Cleanup(pin) })
	d, err := Open(Config{CgroupPath: cg.Path, PinPath: pin})
	if err != nil {
		b.Fatalf("open: %v", err)
	}
	b.Cleanup(func() { d.Close() })
	drainEvents(b, d)
	return d, target
}
