package dataplane

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/vigilsec/vigil/internal/testenv"
)

// BenchmarkConnect measures a loopback TCP connect (socket, connect, close)
// from a process in scope: without programs, then with the data plane
// loaded and tables of 0, 10k and 100k entries that never match the target
// (benchmarking and documentation ranges). Each loaded case reports its
// ratio to the unloaded one as x-none, and the time the scope's cgroup
// programs ran per connect (kernel BPF run-time statistics) as bpf-ns/op,
// which other load on the machine does not inflate.
func BenchmarkConnect(b *testing.B) {
	cg := testenv.NewCgroup(b)
	target := benchListener(b)
	enterCgroup(b, cg.Path)

	var base float64
	b.Run("none", func(b *testing.B) { base = benchConnects(b, target) })

	pin := testPinPath(cg.Path)
	b.Cleanup(func() { _ = Cleanup(pin) })
	d, err := Open(Config{CgroupPath: cg.Path, PinPath: pin})
	if err != nil {
		b.Fatalf("open: %v", err)
	}
	b.Cleanup(func() { d.Close() })
	drainEvents(b, d)
	stats, err := ebpf.EnableStats(unix.BPF_STATS_RUN_TIME)
	if err != nil {
		b.Fatalf("enable bpf stats: %v", err)
	}
	b.Cleanup(func() { stats.Close() })

	for _, n := range []int{0, 10_000, 100_000} {
		if err := d.ApplyTable(benchTable(n)); err != nil {
			b.Fatalf("apply %d entries: %v", n, err)
		}
		b.Run(fmt.Sprintf("egress-%dk", n/1000), func(b *testing.B) {
			before := cgroupProgramTime(b, d)
			ns := benchConnects(b, target)
			if base > 0 {
				b.ReportMetric(ns/base, "x-none")
			}
			spent := cgroupProgramTime(b, d) - before
			b.ReportMetric(float64(spent.Nanoseconds())/float64(b.N), "bpf-ns/op")
		})
	}
}

// benchConnects connects b.N times and returns the mean ns per connect.
func benchConnects(b *testing.B, target *unix.SockaddrInet4) float64 {
	b.ReportAllocs()
	for b.Loop() {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			b.Fatal(err)
		}
		if err := unix.Connect(fd, target); err != nil {
			b.Fatal(err)
		}
		unix.Close(fd)
	}
	return float64(b.Elapsed().Nanoseconds()) / float64(b.N)
}

// benchTable has n egress entries: IPv4 hosts in 198.18.0.0/15 and IPv6
// hosts in 2001:db8::/32, alternating, with the port rules a real table has.
func benchTable(n int) Table {
	t := Table{DefaultEgress: VerdictAllow, Egress: make([]EgressRule, n)}
	for i := range t.Egress {
		var dest netip.Prefix
		if i%2 == 0 {
			dest = netip.PrefixFrom(netip.AddrFrom4([4]byte{198, 18 + byte(i>>16&1), byte(i >> 8), byte(i)}), 32)
		} else {
			dest = netip.PrefixFrom(netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 14: byte(i >> 8), 15: byte(i)}), 128)
		}
		t.Egress[i] = EgressRule{RuleID: uint32(i + 1), Dest: dest, PortMin: 443, PortMax: 443,
			Proto: ProtoTCP, Verdict: VerdictDeny}
	}
	return t
}

// benchListener accepts and closes connections on loopback, outside the scope.
func benchListener(b *testing.B) *unix.SockaddrInet4 {
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

// enterCgroup moves this process into dir and back when the benchmark ends,
// before the cgroup is removed.
func enterCgroup(b *testing.B, dir string) {
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
			b.Fatalf("leave cgroup: %v", err)
		}
	})
}

// drainEvents reads and drops events, as the agent would consume them.
func drainEvents(b *testing.B, d *Dataplane) {
	rd, err := d.Events()
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

// cgroupProgramTime sums the run time of the programs attached to the scope
// (the global tp_btf programs also run for the rest of the machine).
func cgroupProgramTime(b *testing.B, d *Dataplane) time.Duration {
	var total time.Duration
	for _, h := range hooks {
		if !h.cgroup {
			continue
		}
		st, err := d.objs.program(h.prog).Stats()
		if err != nil {
			b.Fatalf("stats %s: %v", h.name, err)
		}
		total += st.Runtime
	}
	return total
}
