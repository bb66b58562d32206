package bench

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strings"

	"golang.org/x/sys/unix"
)

// NewNetns creates a network namespace with loopback up; Close deletes it
// with everything in it (nftables tables included).
func (e *Env) NewNetns(suffix string) (string, error) {
	name := fmt.Sprintf("vigil-bench-%d-%s", os.Getpid(), suffix)
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		return "", fmt.Errorf("ip netns add %s: %w: %s", name, err, bytes.TrimSpace(out))
	}
	e.Defer(func() {
		if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
			e.Log.Warn("delete netns", "netns", name, "err", err, "out", string(out))
		}
	})
	if out, err := exec.Command("ip", "-n", name, "link", "set", "lo", "up").CombinedOutput(); err != nil {
		return "", fmt.Errorf("ip -n %s link set lo up: %w: %s", name, err, bytes.TrimSpace(out))
	}
	return name, nil
}

// listenIn opens a loopback TCP listener that accepts and closes every
// connection, and a UDP socket that reads and drops every datagram, both in
// network namespace netns ("-": this one) and outside any scope. Close
// closes them. It returns their ports.
func (e *Env) listenIn(netns string) (tcpPort, udpPort int, err error) {
	var ln net.Listener
	var pc net.PacketConn
	err = inNetns(netns, func() error {
		if ln, err = net.Listen("tcp4", "127.0.0.1:0"); err != nil {
			return err
		}
		pc, err = net.ListenPacket("udp4", "127.0.0.1:0")
		return err
	})
	if err != nil {
		if ln != nil {
			ln.Close()
		}
		return 0, 0, fmt.Errorf("listen in %s: %w", netns, err)
	}
	e.Defer(func() { ln.Close(); pc.Close() })
	go acceptAndClose(ln)
	go readAndDrop(pc)
	return ln.Addr().(*net.TCPAddr).Port, pc.LocalAddr().(*net.UDPAddr).Port, nil
}

func acceptAndClose(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		c.Close()
	}
}

func readAndDrop(pc net.PacketConn) {
	buf := make([]byte, 64)
	for {
		if _, _, err := pc.ReadFrom(buf); err != nil {
			return
		}
	}
}

// inNetns runs f on a thread inside network namespace name ("-": here).
// Sockets f creates belong to that namespace for their lifetime.
func inNetns(name string, f func() error) error {
	if name == "-" {
		return f()
	}
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		home, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			errc <- fmt.Errorf("open own netns: %w", err)
			return
		}
		defer unix.Close(home)
		if err := enterNetns(name); err != nil {
			errc <- err
			return
		}
		ferr := f()
		if err := unix.Setns(home, unix.CLONE_NEWNET); err != nil {
			// The thread stays locked and dies with the goroutine.
			errc <- fmt.Errorf("return from netns: %w", err)
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// nftEgressTable is an nftables table with the same egress entries as
// egressTable(n), dropping matching packets on output: the rule an
// operator would write instead of Vigil.
func nftEgressTable(n int) string {
	var b strings.Builder
	b.WriteString("table inet vigil_bench {\n")
	b.WriteString("  set egress4 { type inet_proto . ipv4_addr . inet_service; size 262144;\n")
	writeElements(&b, n, 0)
	b.WriteString("  }\n  set egress6 { type inet_proto . ipv6_addr . inet_service; size 262144;\n")
	writeElements(&b, n, 1)
	b.WriteString("  }\n  chain output {\n    type filter hook output priority 0; policy accept;\n")
	b.WriteString("    meta nfproto ipv4 meta l4proto . ip daddr . th dport @egress4 drop\n")
	b.WriteString("    meta nfproto ipv6 meta l4proto . ip6 daddr . th dport @egress6 drop\n")
	b.WriteString("  }\n}\n")
	return b.String()
}

// writeElements writes the elements of entries i < n with i%2 == parity.
func writeElements(b *strings.Builder, n, parity int) {
	first := true
	for i := parity; i < n; i += 2 {
		if first {
			b.WriteString("    elements = { ")
		} else {
			b.WriteString(",\n      ")
		}
		first = false
		fmt.Fprintf(b, "tcp . %s . 443", benchDest(i).Addr())
	}
	if !first {
		b.WriteString(" }\n")
	}
}

// loadNft loads the table into netns and deletes it at Close (deleting the
// namespace would drop it too; this also covers a namespace that outlives
// the run).
func (e *Env) loadNft(netns, ruleset string) error {
	cmd := exec.Command("ip", "netns", "exec", netns, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(ruleset)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("nft -f in %s: %w: %s", netns, err, firstLine(out))
	}
	e.Defer(func() {
		del := exec.Command("ip", "netns", "exec", netns, "nft", "delete", "table", "inet", "vigil_bench")
		out, err := del.CombinedOutput()
		if err != nil {
			e.Log.Warn("delete nft table", "netns", netns, "err", err, "out", string(out))
		}
	})
	return nil
}

func firstLine(out []byte) string {
	line, _, _ := bytes.Cut(bytes.TrimSpace(out), []byte("\n"))
	return string(line)
}
