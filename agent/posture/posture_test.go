package posture

import (
	"context"
	"net"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
)

func TestCollect(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	port := strconv.Itoa(lis.Addr().(*net.TCPAddr).Port)

	p, err := Collect(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	host, _ := os.Hostname()
	if p.Hostname != host || p.Os != runtime.GOOS || p.KernelVersion == "" || p.BootTimeUnix == 0 {
		t.Errorf("posture %v: want hostname %q, os %s, a kernel version and boot time", p, host, runtime.GOOS)
	}
	if !slices.Contains(p.Listening, "tcp:"+port) {
		t.Errorf("listening %v lacks our listener tcp:%s", p.Listening, port)
	}
	if p.ProcessCount == 0 || len(p.ProcessNames) == 0 || !slices.IsSorted(p.ProcessNames) {
		t.Errorf("process summary %d %v", p.ProcessCount, p.ProcessNames)
	}
	if !strings.Contains(p.Hardware, "MiB") {
		t.Errorf("hardware %q", p.Hardware)
	}
}

func TestAddressesSkipLoopback(t *testing.T) {
	addrs, err := Addresses()
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range addrs {
		ip := net.ParseIP(a)
		if ip == nil || ip.IsLoopback() || ip.IsLinkLocalUnicast() {
			t.Errorf("address %q should not be reported", a)
		}
	}
}

func TestSortedUnique(t *testing.T) {
	tests := []struct {
		name string
		in   []string
		want []string
	}{
		{"empty", nil, nil},
		{"dups", []string{"b", "a", "b"}, []string{"a", "b"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := sortedUnique(tt.in); !slices.Equal(got, tt.want) {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
}

// TestListsBounded checks that a posture list never exceeds the bound the
// server holds it to, and stays sorted and unique.
func TestListsBounded(t *testing.T) {
	var in []string
	for i := range 3 * maxList {
		in = append(in, strconv.Itoa(i%(2*maxList)))
	}
	out := sortedUnique(in)
	if len(out) != maxList || !slices.IsSorted(out) || len(slices.Compact(slices.Clone(out))) != maxList {
		t.Errorf("%d entries, sorted %v; want %d sorted unique", len(out), slices.IsSorted(out), maxList)
	}
}
