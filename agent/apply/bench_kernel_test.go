package apply

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vigilsec/vigil/agent/dataplane"
	"github.com/vigilsec/vigil/agent/proctable"
	vigilpb "github.com/vigilsec/vigil/gen/vigil/v1"
	"github.com/vigilsec/vigil/internal/testenv"
)

// helperEnv makes the test binary act as a helper ("MODE ADDR") instead of
// running tests; the benchmarks run it inside their scope.
const helperEnv = "VIGIL_APPLY_HELPER"

func TestMain(m *testing.M) {
	if mode, addr, ok := strings.Cut(os.Getenv(helperEnv), " "); ok {
		switch mode {
		case "connect-until-eperm":
			os.Exit(connectUntilRefused(addr))
		case "hold-until-reset":
			os.Exit(holdUntilReset(addr))
		}
		os.Exit(2)
	}
	os.Exit(m.Run())
}

// holdUntilReset connects to addr, says "ready", and prints the wall-clock
// time in ns at which the connection was aborted or reset.
func holdUntilReset(addr string) int {
	ap := netip.MustParseAddrPort(addr)
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err == nil {
		err = unix.Connect(fd, &unix.SockaddrInet4{Addr: ap.Addr().As4(), Port: int(ap.Port())})
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	fmt.Println("ready")
	_, err = unix.Read(fd, make([]byte, 1))
	if !errors.Is(err, unix.ECONNABORTED) && !errors.Is(err, unix.ECONNRESET) {
		fmt.Fprintln(os.Stderr, "read:", err)
		return 2
	}
	fmt.Println(time.Now().UnixNano())
	return 0
}

// connectUntilRefused says "ready", connects to addr until a connect fails
// with EPERM, and prints the wall-clock time of that refusal in ns.
func connectUntilRefused(addr string) int {
	ap := netip.MustParseAddrPort(addr)
	sa := &unix.SockaddrInet4{Addr: ap.Addr().As4(), Port: int(ap.Port())}
	fmt.Println("ready")
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err == nil {
			err = unix.Connect(fd, sa)
			unix.Close(fd)
		}
		if errors.Is(err, unix.EPERM) {
			fmt.Println(time.Now().UnixNano())
			return 0
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 2
		}
	}
	fmt.Fprintln(os.Stderr, "no EPERM within 10s")
	return 2
}

// BenchmarkDiffDenyLatency measures what the agent adds to a deny's way
// into the kernel: from the call of ApplyDiff with one added deny to the
// first connect it refuses, in a loop of connects run by a helper process
// in the scope of a real data plane. It reports p50-us and p99-us of that
// latency and ack-p50-ms, when ApplyDiff returned its acknowledgement
// (after the table swap). Each iteration first removes the deny again (not
// measured). Tables of 10 and 100k entries; -benchtime=50x for percentiles.
func BenchmarkDiffDenyLatency(b *testing.B) {
	a, cg, target := benchApplier(b)
	deny := &vigilpb.EgressEntry{RuleId: 1 << 30, Destination: "127.0.0.1/32",
		PortMin: uint32(target.Port()), PortMax: uint32(target.Port()),
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
				b.StopTimer()
				v := a.Version()
				refused := startHelper(b, cg, "connect-until-eperm", target)
				b.StartTimer()

				start := time.Now()
				ack, err := a.ApplyDiff(&vigilpb.TableDiff{BaseVersion: v, Version: v + 1,
					EgressAdded: []*vigilpb.EgressEntry{deny}})
				if err != nil || ack.Error != "" {
					b.Fatalf("apply diff: %v %v", err, ack)
				}
				acks = append(acks, time.Since(start))
				lat = append(lat, refused().Sub(start))

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

// startHelper starts a helper in cg and waits until it is ready; the
// returned function waits for the time it prints next.
func startHelper(b *testing.B, cg *testenv.Cgroup, mode string,
	target netip.AddrPort) func() time.Time {
	self, err := os.Executable()
	if err != nil {
		b.Fatal(err)
	}
	cmd := cg.Command(b, self)
	cmd.Env = append(os.Environ(), helperEnv+"="+mode+" "+target.String())
	cmd.Stderr = os.Stderr
	pipe, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	out := bufio.NewReader(pipe)
	if _, err := out.ReadString('\n'); err != nil {
		b.Fatalf("helper: %v", err)
	}
	return func() time.Time {
		defer cmd.Wait()
		var ns int64
		line, err := out.ReadString('\n')
		if _, serr := fmt.Sscan(line, &ns); err != nil || serr != nil {
			b.Fatalf("helper printed %q: %v %v", line, err, serr)
		}
		return time.Unix(0, ns)
	}
}

// BenchmarkCutInstruction measures a CUT instruction from Execute to the
// moment a process in scope holding a connection to the peer sees it
// destroyed, with the agent holding tables of 10 and 100k entries (which it
// rewrites after the cut to record it). It reports p50-us and p99-us, and
// ack-p50-ms, when Execute returned the acknowledgement.
func BenchmarkCutInstruction(b *testing.B) {
	a, cg, _ := benchApplier(b)
	peer := holdOpen(b)
	seq := uint64(0)
	for _, n := range []int{10, 100_000} {
		tab := benchEntries(n)
		tab.Version = a.Version() + 1
		if ack := a.ApplyTable(tab); ack.Error != "" {
			b.Fatal(ack.Error)
		}
		b.Run(fmt.Sprintf("entries-%d", n), func(b *testing.B) {
			var lat, acks []time.Duration
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				reset := startHelper(b, cg, "hold-until-reset", peer)
				b.StartTimer()

				seq++
				start := time.Now()
				ins := &vigilpb.Instruction{Seq: seq, Kind: vigilpb.InstructionKind_INSTRUCTION_KIND_CUT,
					Peer: peer.String()}
				if ack, err := a.Execute(ins, start); err != nil || ack.Error != "" {
					b.Fatalf("cut: %v %v", err, ack)
				}
				acks = append(acks, time.Since(start))
				lat = append(lat, reset().Sub(start))

				b.StopTimer()
				seq++
				ins = &vigilpb.Instruction{Seq: seq, Kind: vigilpb.InstructionKind_INSTRUCTION_KIND_RESTORE,
					Peer: peer.String()}
				if ack, err := a.Execute(ins, time.Now()); err != nil || ack.Error != "" {
					b.Fatalf("restore: %v %v", err, ack)
				}
				b.StartTimer()
			}
			b.ReportMetric(float64(pct(lat, 50).Microseconds()), "p50-us")
			b.ReportMetric(float64(pct(lat, 99).Microseconds()), "p99-us")
			b.ReportMetric(float64(pct(acks, 50).Microseconds())/1000, "ack-p50-ms")
		})
	}
}

// holdOpen accepts connections on loopback and holds them until the peer
// goes away.
func holdOpen(b *testing.B) netip.AddrPort {
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

// benchApplier returns an online Applier driving a real data plane on a
// fresh scope, the scope, and a loopback listener outside it.
func benchApplier(b *testing.B) (*Applier, *testenv.Cgroup, netip.AddrPort) {
	testenv.RequireRoot(b)
	cg := testenv.NewCgroup(b)
	target := acceptAndClose(b)

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
	return a, cg, target
}

// acceptAndClose accepts and closes connections on loopback.
func acceptAndClose(b *testing.B) netip.AddrPort {
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
	return netip.MustParseAddrPort(ln.Addr().String())
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
