// Package posture collects the device's security-relevant state with
// gopsutil: host identity, OS and kernel, boot time, logged-in users,
// listening sockets and a summary of running processes, plus the host's (or
// network namespace's) addresses for Hello. The agent's run loop calls
// Collect at start and then periodically; the package holds no resources.
package posture

import (
	"context"
	"fmt"
	"net"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"

	"github.com/shirou/gopsutil/v4/host"
	"github.com/shirou/gopsutil/v4/mem"
	psnet "github.com/shirou/gopsutil/v4/net"
	vigilpb "github.com/vigilsec/vigil/gen/vigil/v1"
)

// Collect gathers the posture. Host information is required; users,
// sockets, processes and hardware are best effort, since containers and
// minimal VMs often lack utmp or parts of /proc.
func Collect(ctx context.Context) (*vigilpb.Posture, error) {
	info, err := host.InfoWithContext(ctx)
	if err != nil {
		return nil, fmt.Errorf("read host info: %w", err)
	}
	p := &vigilpb.Posture{
		HostId: info.HostID, Hostname: info.Hostname, Os: info.OS,
		Platform: info.Platform, PlatformVersion: info.PlatformVersion,
		KernelVersion: info.KernelVersion, BootTimeUnix: info.BootTime,
	}

	p.Users = users(ctx)
	p.Listening = listening(ctx)
	p.ProcessCount, p.ProcessNames = processes()
	p.Hardware = hardware(ctx)
	return p, nil
}

func users(ctx context.Context) []string {
	list, _ := host.UsersWithContext(ctx)
	var out []string
	for _, u := range list {
		out = append(out, u.User)
	}
	return sortedUnique(out)
}

// listening returns "tcp:PORT" for listening TCP sockets and "udp:PORT" for
// bound, unconnected UDP sockets.
func listening(ctx context.Context) []string {
	conns, _ := psnet.ConnectionsWithContext(ctx, "inet")
	var out []string
	for _, c := range conns {
		switch {
		case c.Type == 1 && c.Status == "LISTEN": // SOCK_STREAM
			out = append(out, "tcp:"+strconv.Itoa(int(c.Laddr.Port)))
		case c.Type == 2 && c.Raddr.Port == 0 && c.Laddr.Port != 0: // SOCK_DGRAM
			out = append(out, "udp:"+strconv.Itoa(int(c.Laddr.Port)))
		}
	}
	return sortedUnique(out)
}

// processes counts the processes in /proc and lists their distinct names.
// It reads /proc itself: gopsutil's process package pulls in modules the
// agent does not otherwise need.
func processes() (uint32, []string) {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return 0, nil
	}
	var count uint32
	var names []string
	for _, e := range entries {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		count++
		if comm, err := os.ReadFile("/proc/" + e.Name() + "/comm"); err == nil {
			names = append(names, strings.TrimSpace(string(comm)))
		}
	}
	return count, sortedUnique(names)
}

// hardware summarizes the CPU model (from /proc/cpuinfo), CPU count and
// memory size.
func hardware(ctx context.Context) string {
	model := "unknown cpu"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				model = strings.TrimSpace(v)
				break
			}
		}
	}
	count := runtime.NumCPU()
	var memory uint64
	if vm, err := mem.VirtualMemoryWithContext(ctx); err == nil {
		memory = vm.Total
	}
	return fmt.Sprintf("%s x%d, %d MiB", model, count, memory>>20)
}

// Addresses returns the non-loopback, non-link-local unicast addresses of
// the network namespace the agent runs in.
func Addresses() ([]string, error) {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return nil, fmt.Errorf("list interface addresses: %w", err)
	}
	var out []string
	for _, a := range addrs {
		ipn, ok := a.(*net.IPNet)
		if !ok || ipn.IP.IsLoopback() || ipn.IP.IsLinkLocalUnicast() || ipn.IP.IsMulticast() {
			continue
		}
		out = append(out, ipn.IP.String())
	}
	return sortedUnique(out), nil
}

// MaxAddresses bounds the addresses an agent reports; the server refuses a
// hello with more (must match server/api.maxHelloAddresses).
const MaxAddresses = 64

// maxList bounds each list of a posture; the server cuts longer lists to
// the same figure (must match server/api.maxPostureList).
const maxList = 512

// sortedUnique sorts and deduplicates s, keeping at most maxList entries.
func sortedUnique(s []string) []string {
	slices.Sort(s)
	s = slices.Compact(s)
	return s[:min(len(s), maxList)]
}
