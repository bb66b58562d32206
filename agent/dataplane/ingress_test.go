package dataplane

import (
	"encoding/binary"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
)

// dialFrom connects from local to addr and reports whether it connected
// within a short timeout (a dropped SYN times out).
func dialFrom(local, addr string) bool {
	d := net.Dialer{Timeout: 300 * time.Millisecond,
		LocalAddr: &net.TCPAddr{IP: net.ParseIP(local)}}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		return false
	}
	c.Close()
	return true
}

func TestIngressProtectedPort(t *testing.T) {
	d, cg := openScoped(t, Config{})
	w := watchEvents(t, d)
	cmd := helper(t, cg, "listen", "0.0.0.0:0")
	out, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	buf := make([]byte, 16)
	n, _ := out.Read(buf)
	p, _ := strconv.Atoi(strings.TrimSpace(string(buf[:n])))
	port := uint16(p)
	addr := "127.0.0.1:" + strconv.Itoa(p)

	table := Table{
		ProtectedPorts: []PortRange{{Min: port, Max: port, Proto: ProtoTCP, Default: VerdictDeny}},
		Ingress: []IngressRule{{RuleID: 11, Peer: prefix("127.0.0.2/32"), PortMin: port, PortMax: port,
			Proto: ProtoTCP, Verdict: VerdictAllow}},
	}
	if err := d.ApplyTable(table); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, from string
		want       bool
	}{
		{"admitted peer connects", "127.0.0.2", true},
		{"other peer is dropped", "127.0.0.3", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := dialFrom(tt.from, addr); got != tt.want {
				t.Errorf("dial from %s: connected %v, want %v", tt.from, got, tt.want)
			}
		})
	}
	e := w.wait(t, "accept", func(e Event) bool { return e.Kind == EventAccept && e.Verdict == VerdictAllow })
	if e.RuleID != 11 || e.Remote.Addr() != netip.MustParseAddr("127.0.0.2") || e.Local.Port() != port || e.CgroupID != cg.ID {
		t.Errorf("accept event = %+v", e)
	}
	e = w.wait(t, "drop", func(e Event) bool { return e.Kind == EventAccept && e.Verdict == VerdictDeny })
	if e.RuleID != 0 || e.Remote.Addr() != netip.MustParseAddr("127.0.0.3") || !e.Inbound {
		t.Errorf("drop event = %+v", e)
	}
}

func TestQuarantine(t *testing.T) {
	d, cg := openScoped(t, Config{})
	server := listenTCP(t, "127.0.0.7:0")
	other := listenTCP(t, "127.0.0.8:0")
	table := Table{Quarantined: true, QuarantineExempt: []netip.Prefix{prefix("127.0.0.7/32")}}
	if err := d.ApplyTable(table); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		addr string
		want int
	}{
		{"server stays reachable", server.String(), exitOK},
		{"everything else is refused", other.String(), exitEPERM},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := runHelperExit(t, cg, "connect", tt.addr); got != tt.want {
				t.Errorf("connect %s: exit %d, want %d", tt.addr, got, tt.want)
			}
		})
	}
	c, _ := d.Counters()
	if c.Verdicts["egress-deny-quarantine"] == 0 {
		t.Errorf("quarantine denials not counted: %+v", c.Verdicts)
	}
}

func TestRingBufferLossIsCounted(t *testing.T) {
	d, cg := openScoped(t, Config{RingBufferBytes: 4096})
	target := listenTCP(t, "127.0.0.1:0")
	if out, err := helper(t, cg, "connect-loop", target.String(), "200").CombinedOutput(); err != nil {
		t.Fatalf("connect loop: %v: %s", err, out)
	}
	c, err := d.Counters()
	if err != nil {
		t.Fatal(err)
	}
	if c.EventsLost == 0 || c.EventsEmitted == 0 {
		t.Errorf("counters after flooding a 4 KiB ring buffer: emitted %d lost %d", c.EventsEmitted, c.EventsLost)
	}
	t.Logf("emitted %d, lost %d", c.EventsEmitted, c.EventsLost)
}

// ipv4TCP builds an Ethernet+IPv4+TCP frame for BPF_PROG_TEST_RUN.
func ipv4TCP(src, dst string, sport, dport uint16, flags byte) []byte {
	pkt := make([]byte, 14+20+20)
	binary.BigEndian.PutUint16(pkt[12:], 0x0800)
	ip := pkt[14:]
	ip[0], ip[8], ip[9] = 0x45, 64, 6
	binary.BigEndian.PutUint16(ip[2:], 40)
	s, d := netip.MustParseAddr(src).As4(), netip.MustParseAddr(dst).As4()
	copy(ip[12:], s[:])
	copy(ip[16:], d[:])
	tcp := ip[20:]
	binary.BigEndian.PutUint16(tcp[0:], sport)
	binary.BigEndian.PutUint16(tcp[2:], dport)
	tcp[12], tcp[13] = 5<<4, flags
	return pkt
}

func TestIngressProgramDecisions(t *testing.T) {
	d, _ := openScoped(t, Config{})
	table := Table{
		ProtectedPorts: []PortRange{{Min: 8000, Max: 8099, Proto: ProtoTCP, Default: VerdictDeny}},
		Ingress: []IngressRule{
			{RuleID: 1, Peer: prefix("10.1.0.0/16"), PortMin: 8000, PortMax: 8010, Proto: ProtoTCP, Verdict: VerdictAllow},
			{RuleID: 2, Peer: prefix("10.1.2.0/24"), PortMin: 8005, PortMax: 8005, Proto: ProtoTCP, Verdict: VerdictDeny},
		},
		Cut: []Peer{{Addr: netip.MustParseAddr("192.0.2.9")}},
	}
	if err := d.ApplyTable(table); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name  string
		src   string
		dport uint16
		want  uint32
	}{
		{"unprotected port passes", "192.0.2.1", 22, 1},
		{"protected port, unknown peer dropped", "192.0.2.1", 8000, 0},
		{"admitted prefix passes", "10.1.9.9", 8003, 1},
		{"admitted prefix outside its ports dropped", "10.1.9.9", 8050, 0},
		{"longer deny prefix wins on its port", "10.1.2.3", 8005, 0},
		{"covering allow applies to longer prefix elsewhere", "10.1.2.3", 8006, 1},
		{"cut peer dropped on any port", "192.0.2.9", 22, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ret, err := d.objs.VigilIngress.Run(&ebpf.RunOptions{Data: ipv4TCP(tt.src, "192.0.2.100", 40000, tt.dport, 0x02)})
			if err != nil {
				t.Fatalf("test run: %v", err)
			}
			if ret != tt.want {
				t.Errorf("verdict %d, want %d", ret, tt.want)
			}
		})
	}
}

func TestPacketProgramsQuarantineAndCut(t *testing.T) {
	d, _ := openScoped(t, Config{})
	quarantine := Table{Quarantined: true, QuarantineExempt: []netip.Prefix{prefix("192.0.2.50/32")}}
	cut := Table{Cut: []Peer{{Addr: netip.MustParseAddr("192.0.2.9"), Port: 443}}}
	const syn, rst = 0x02, 0x04
	tests := []struct {
		name         string
		table        Table
		egress       bool
		src, dst     string
		sport, dport uint16
		flags        byte
		want         uint32
	}{
		{"quarantine drops inbound", quarantine, false, "192.0.2.1", "192.0.2.100", 40000, 22, syn, 0},
		{"quarantine admits the server", quarantine, false, "192.0.2.50", "192.0.2.100", 443, 40000, syn, 1},
		{"quarantine drops outbound", quarantine, true, "192.0.2.100", "192.0.2.1", 40000, 22, syn, 0},
		{"quarantine lets packets to the server out", quarantine, true, "192.0.2.100", "192.0.2.50", 40000, 443, syn, 1},
		{"cut drops outbound to the peer port", cut, true, "192.0.2.100", "192.0.2.9", 40000, 443, syn, 0},
		{"cut lets other ports of the peer out", cut, true, "192.0.2.100", "192.0.2.9", 40000, 80, syn, 1},
		{"cut lets resets out", cut, true, "192.0.2.100", "192.0.2.9", 40000, 443, rst, 1},
		{"cut drops inbound from the peer port", cut, false, "192.0.2.9", "192.0.2.100", 443, 40000, syn, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := d.ApplyTable(tt.table); err != nil {
				t.Fatal(err)
			}
			prog := d.objs.VigilIngress
			if tt.egress {
				prog = d.objs.VigilEgressSkb
			}
			pkt := ipv4TCP(tt.src, tt.dst, tt.sport, tt.dport, tt.flags)
			ret, err := prog.Run(&ebpf.RunOptions{Data: pkt})
			if err != nil {
				t.Fatalf("test run: %v", err)
			}
			if ret != tt.want {
				t.Errorf("verdict %d, want %d", ret, tt.want)
			}
		})
	}
}
