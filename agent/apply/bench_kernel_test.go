package apply

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vigilsec/vigil/agent/dataplane"
	"github.com/vigilsec/vigil/agent/proctable"
	vigilpb "github.com/vigilsec/vigil/gen/vigil/v1"
	"github.com/vigilsec/vigil/internal/testenv"
)

// BenchmarkDiffDenyLatency measures what the agent adds to a deny's way
// into the kernel: from the call of ApplyDiff with one added deny to the
// first connect it refuses, in a loop of connects from this process, moved
// into the scope of a real data plane. It reports p50-us and p99-us of
// that latency and ack-p50-ms, when ApplyDiff returned its acknowledgement
// (after the table swap). Each iteration first removes the deny again (not
// measured). Tables of 10 and 100k entries; -benchtime=50x for percentiles.
func BenchmarkDiffDenyLatency(b *testing.B) {
	a, target := benchApplier(b)
	deny := &vigilpb.EgressEntry{RuleId: 1 << 30, Destination: "127.0.0.1/32",
		PortMin: uint32(target.Port), PortMax: uint32(target.Port),
		Protocol: vigilpb.Protocol_PROTOCOL_TCP, Verdict: vigilpb.Verdict_VERDICT_DENY}
	for _, n := range []int{10, 100_000} {
		tab := benchEntries(n)
		tab.Version = a.Version() + 1
		if ack := a.ApplyTable(tab); ack.Error != "" {
			b.Fatal(ack.Error)
		}
		b.Run(fmt.Sprintf("entries-%d", n), func(b *testing.B) {
			var lat, acks []time.Duration
			for i := 0; i < b.N; i++ {
				v := a.Version()
				refused := loopUntilRefused(b, target)
				start := time.Now()
				ack, err := a.ApplyDiff(&vigilpb.TableDiff{BaseVersion: v, Version: v + 1,
					EgressAdded: []*vigilpb.EgressEntry{deny}})
				if err != nil || ack.Error != "" {
					b.Fatalf("apply diff: %v %v", err, ack)
				}
				acks = append(acks, time.Since(start))
				lat = append(lat, (<-refused).Sub(start))

				b.StopTimer()
				ack, err = a.ApplyDiff(&vigilpb.TableDiff{BaseVersion: v + 1, Version: v + 2,
					EgressRemoved: []*vigilpb.EgressEntry{deny}})
				if err != nil || ack.Error != "" {
					b.Fatalf("remove deny: %v %v", err, ack)
				}
				b.StartTimer()
			}
			b.ReportMetric(float64(pct(lat, 50).Microseconds()), "p50-us")
			b.ReportMetric(float64(pct(lat, 99).Microseconds()), "p99-us")
			b.ReportMetric(float64(pct(acks, 50).Microseconds())/1000, "ack-p50-ms")
		})
	}
}

// benchEntries is a table of n egress denies to documentation addresses.
func benchEntries(n int) *vigilpb.VerdictTable {
	t := &vigilpb.VerdictTable{DefaultEgress: vigilpb.Verdict_VERDICT_ALLOW}
	for i := range n {
		dest := fmt.Sprintf("198.%d.%d.%d/32", 18+i>>16, i>>8&255, i&255)
		t.Egress = append(t.Egress, &vigilpb.EgressEntry{
			RuleId: uint32(i + 1), Destination: dest, PortMin: 443, PortMax: 443,
			Protocol: vigilpb.Protocol_PROTOCOL_TCP, Verdict: vigilpb.Verdict_VERDICT_DENY,
		})
	}
	return t
}

func pct(ds []time.Duration, p int) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[max((len(s)*p+99)/100-1, 0)]
}

// loopUntilRefused connects to target in the background until a connect
// fails with EPERM and sends the time of that refusal; it returns once a
// first connect has succeeded.
func loopUntilRefused(b *testing.B, target *unix.SockaddrInet4) <-chan time.Time {
	running := make(chan struct{})
	refused := make(chan time.Time, 1)
	go func() {
		for first := true; ; first = false {
			err := connectTo(target)
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
	case <-refused:
		b.Fatal("connect refused before the deny")
	}
	return refused
}

func connectTo(target *unix.SockaddrInet4) error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	return unix.Connect(fd, target)
}

// benchApplier moves this process into a fresh scope with a real data
// plane and returns an online Applier driving it, and a loopback listener.
func benchApplier(b *testing.B) (*Applier, *unix.SockaddrInet4) {
	testenv.RequireRoot(b)
	cg := testenv.NewCgroup(b)
	target := acceptAndClose(b)
	moveInto(b, cg.Path)

	pin := filepath.Join(dataplane.DefaultPinRoot, "bench-"+filepath.Base(cg.Path))
	b.Cleanup(func() { _ = dataplane.Cleanup(pin) })
	dp, err := dataplane.Open(dataplane.Config{CgroupPath: cg.Path, PinPath: pin})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { dp.Close() })
	drain(b, dp)
	a, err := New(Config{Kernel: dp, Resolver: proctable.New("/proc"),
		StateDir: b.TempDir(), Scope: cg.Path})
	if err != nil {
		b.Fatal(err)
	}
	if err := a.SetOnline(true); err != nil {
		b.Fatal(err)
	}
	return a, target
}

func acceptAndClose(b *testing.B) *unix.SockaddrInet4 {
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
			c.Close()
		}
	}()
	return &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}, Port: ln.Addr().(*net.TCPAddr).Port}
}

// moveInto moves this process into dir, and back before dir is removed.
func moveInto(b *testing.B, dir string) {
	raw, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		b.Fatal(err)
	}
	var home string
	for _, line := range strings.Split(strings.TrimSpace(string(raw)), "\n") {
		if rest, ok := strings.CutPrefix(line, "0::"); ok {
			home = filepath.Join(testenv.CgroupRoot, rest)
		}
	}
	pid := []byte(strconv.Itoa(os.Getpid()))
	if err := os.WriteFile(filepath.Join(dir, "cgroup.procs"), pid, 0); err != nil {
		b.Fatalf("enter cgroup: %v", err)
	}
	b.Cleanup(func() {
		if err := os.WriteFile(filepath.Join(home, "cgroup.procs"), pid, 0); err != nil {
			b.Errorf("leave cgroup: %v", err)
		}
	})
}

// drain reads and drops the data plane's events, as the agent would.
func drain(b testing.TB, dp *dataplane.Dataplane) {
	rd, err := dp.Events()
	if err != nil {
		b.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			if _, err := rd.Read(); err != nil {
				return
			}
		}
	}()
	b.Cleanup(func() { rd.Close(); <-done })
}
