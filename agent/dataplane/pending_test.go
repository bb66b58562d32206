package dataplane

import (
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// overlayIDs renders overlay entries as "prefix: rule ids" for comparison.
func overlayIDs[R any](st spanTable[R], id func(R) uint32) []string {
	var out []string
	for i, key := range st.keys {
		addr, bits := netip.AddrFrom16(key.Addr), int(key.Prefixlen)
		if addr.Is4In6() {
			addr, bits = addr.Unmap(), bits-96
		}
		s := st.spans[i]
		var ids []string
		for _, r := range st.rules[s.First : s.First+s.Count] {
			ids = append(ids, fmt.Sprint(id(r)))
		}
		out = append(out, netip.PrefixFrom(addr, bits).String()+": "+strings.Join(ids, ","))
	}
	slices.Sort(out)
	return out
}

func ingressRule(id uint32, peer string, port uint16, v Verdict) IngressRule {
	return IngressRule{RuleID: id, Peer: prefix(peer), PortMin: port, PortMax: port, Proto: ProtoTCP, Verdict: v}
}

func TestFindPendingDenies(t *testing.T) {
	base := []EgressRule{
		portRule(1, "10.0.0.0/8", 80, ProtoTCP, VerdictAllow),
		portRule(2, "10.9.9.9/32", 22, ProtoTCP, VerdictDeny),
		portRule(3, "192.0.2.0/24", 443, ProtoTCP, VerdictAllow),
	}
	with := func(rules ...EgressRule) []EgressRule { return append(slices.Clone(base), rules...) }
	protected := []PortRange{{Min: 8000, Max: 8100, Proto: ProtoTCP, Default: VerdictAllow}}
	tests := []struct {
		name        string
		prev        *Table
		next        Table
		wantOK      bool
		wantEgress  []string
		wantIngress []string
		wantErr     string
	}{
		{"new deny", &Table{Egress: base}, Table{Egress: with(portRule(4, "10.1.2.3/32", 80, ProtoTCP, VerdictDeny))},
			true, []string{"10.1.2.3/32: 4"}, nil, ""},
		{"deny behind a longer allow waits", &Table{Egress: base},
			Table{Egress: with(portRule(4, "10.0.0.0/7", 80, ProtoAny, VerdictDeny))}, true, nil, nil, ""},
		{"deny behind an earlier allow of its prefix waits", &Table{Egress: base},
			Table{Egress: with(portRule(4, "192.0.2.0/24", 443, ProtoTCP, VerdictDeny))}, true, nil, nil, ""},
		{"deny on other ports than the allow", &Table{Egress: base},
			Table{Egress: with(portRule(4, "10.0.0.0/7", 81, ProtoTCP, VerdictDeny))},
			true, []string{"10.0.0.0/7: 4"}, nil, ""},
		{"ipv6 deny over ipv4 allow waits", &Table{Egress: base},
			Table{Egress: with(portRule(4, "::/0", 80, ProtoTCP, VerdictDeny))}, true, nil, nil, ""},
		{"audit overrides like allow", &Table{Egress: base},
			Table{Egress: with(portRule(5, "10.1.0.0/16", 81, ProtoTCP, VerdictAudit),
				portRule(4, "10.0.0.0/8", 81, ProtoTCP, VerdictDeny))}, true, nil, nil, ""},
		{"covering denies join the longer prefix", &Table{Egress: base},
			Table{Egress: with(portRule(4, "198.51.100.0/24", 25, ProtoTCP, VerdictDeny),
				portRule(5, "198.51.100.7/32", 26, ProtoTCP, VerdictDeny))},
			true, []string{"198.51.100.0/24: 4", "198.51.100.7/32: 5,4"}, nil, ""},
		{"removed rules leave the rest unchanged", &Table{Egress: base},
			Table{Egress: []EgressRule{base[0], base[2], portRule(4, "203.0.113.1/32", 80, ProtoTCP, VerdictDeny)}},
			true, []string{"203.0.113.1/32: 4"}, nil, ""},
		{"first table of an open", nil, Table{Egress: base}, true, []string{"10.9.9.9/32: 2"}, nil, ""},
		{"ingress deny inside a protected range", &Table{ProtectedPorts: protected},
			Table{ProtectedPorts: protected, Ingress: []IngressRule{ingressRule(6, "192.0.2.1/32", 8080, VerdictDeny)}},
			true, nil, []string{"192.0.2.1/32: 6"}, ""},
		{"ingress deny outside protected ports waits", &Table{ProtectedPorts: protected},
			Table{ProtectedPorts: protected, Ingress: []IngressRule{ingressRule(6, "192.0.2.1/32", 9090, VerdictDeny)}},
			true, nil, nil, ""},
		{"invalid new deny is an error", &Table{Egress: base},
			Table{Egress: with(EgressRule{RuleID: 9, Dest: prefix("10.0.0.0/8"), PortMin: 9, PortMax: 8,
				Proto: ProtoTCP, Verdict: VerdictDeny})}, false, nil, nil, "egress rule 9: port range 9-8 is empty"},
		{"too many changes", &Table{}, Table{Egress: benchTable(maxChangedRules + 1).Egress}, false, nil, nil, ""},
		{"too many denies on one prefix", &Table{},
			Table{Egress: slices.Repeat([]EgressRule{portRule(7, "10.0.0.0/8", 1, ProtoTCP, VerdictDeny)}, 9)},
			false, nil, nil, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, ok, err := findPendingDenies(tt.prev, tt.next)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || ok != tt.wantOK {
				t.Fatalf("ok %v err %v, want ok %v", ok, err, tt.wantOK)
			}
			eg := overlayIDs(p.egress, func(r bpfEgressRule) uint32 { return r.RuleId })
			in := overlayIDs(p.ingress, func(r bpfIngressRule) uint32 { return r.RuleId })
			if !slices.Equal(eg, tt.wantEgress) || !slices.Equal(in, tt.wantIngress) {
				t.Errorf("overlay egress %q ingress %q, want %q and %q", eg, in, tt.wantEgress, tt.wantIngress)
			}
		})
	}
}

// TestNewDenyPrecedesSwap applies a large table with one new deny while a
// process in scope connects in a loop, and checks that the deny refused a
// connect before ApplyTable returned, and that the overlay is empty after.
func TestNewDenyPrecedesSwap(t *testing.T) {
	d, cg := openScoped(t, Config{})
	target := listenTCP(t, "127.0.0.1:0")
	base := benchTable(20_000)
	if err := d.ApplyTable(base); err != nil {
		t.Fatal(err)
	}
	cmd, out := startHelper(t, cg, "connect-until-eperm", target.String())

	next := base
	deny := portRule(1<<30, "127.0.0.1/32", target.Port(), ProtoTCP, VerdictDeny)
	next.Egress = append(slices.Clone(base.Egress), deny)
	start := time.Now()
	if err := d.ApplyTable(next); err != nil {
		t.Fatal(err)
	}
	applied := time.Since(start)
	line, err := out.ReadString('\n')
	if err != nil {
		t.Fatalf("helper: %v", err)
	}
	refused := helperTime(t, line).Sub(start)
	_ = cmd.Wait()
	t.Logf("first EPERM %v after ApplyTable began; ApplyTable took %v", refused, applied)
	if refused >= applied {
		t.Errorf("first EPERM %v after the call, not before ApplyTable returned (%v)", refused, applied)
	}
	assertPendingEmpty(t, d)
}

// helperTime parses the wall-clock time a helper printed in nanoseconds.
func helperTime(t testing.TB, line string) time.Time {
	t.Helper()
	var ns int64
	if _, err := fmt.Sscan(line, &ns); err != nil {
		t.Fatalf("helper printed %q: %v", line, err)
	}
	return time.Unix(0, ns)
}

func assertPendingEmpty(t *testing.T, d *Dataplane) {
	t.Helper()
	var info bpfScopeInfo
	if err := d.objs.Scope.Lookup(uint32(0), &info); err != nil {
		t.Fatal(err)
	}
	var k bpfPrefixKey
	if err := d.objs.EgressPending.NextKey(nil, &k); err == nil {
		t.Errorf("egress_pending still holds %v", k)
	}
	if err := d.objs.IngressPending.NextKey(nil, &k); err == nil {
		t.Errorf("ingress_pending still holds %v", k)
	}
	if info.PendingEntries != 0 {
		t.Errorf("pending_entries = %d after the swap", info.PendingEntries)
	}
}

// TestFastDeniesNeverMisjudge flips between two tables while processes in
// scope connect in loops. The second table adds denies through the overlay:
// one for a destination it also allows by an earlier, longer rule (must
// stay allowed), one for a destination both tables deny, and one that only
// it denies (must see both verdicts, so the overlay was exercised).
func TestFastDeniesNeverMisjudge(t *testing.T) {
	d, cg := openScoped(t, Config{})
	allowed := listenTCP(t, "127.0.0.1:0")
	denied := listenTCP(t, "127.0.0.1:0")
	flipping := listenTCP(t, "127.0.0.1:0")
	filler := benchTable(2000).Egress
	a := Table{Egress: append([]EgressRule{
		portRule(1, "127.0.0.1/32", allowed.Port(), ProtoTCP, VerdictAllow),
		portRule(2, "127.0.0.1/32", denied.Port(), ProtoTCP, VerdictDeny)}, filler...)}
	b := a
	b.Egress = append(slices.Clone(a.Egress),
		portRule(3, "127.0.0.0/8", allowed.Port(), ProtoTCP, VerdictDeny),
		portRule(4, "127.0.0.0/8", denied.Port(), ProtoAny, VerdictDeny),
		portRule(5, "127.0.0.1/32", flipping.Port(), ProtoTCP, VerdictDeny))
	p, ok, err := findPendingDenies(&a, b)
	ids := overlayIDs(p.egress, func(r bpfEgressRule) uint32 { return r.RuleId })
	if want := []string{"127.0.0.0/8: 4", "127.0.0.1/32: 5,4"}; err != nil || !ok || !slices.Equal(ids, want) {
		t.Fatalf("overlay for the second table %q, ok %v, err %v; want %q", ids, ok, err, want)
	}
	if err := d.ApplyTable(a); err != nil {
		t.Fatal(err)
	}

	stop := make(chan struct{})
	errc := make(chan error, 1)
	swaps := 0
	go func() {
		defer close(errc)
		for i := 1; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			if err := d.ApplyTable([]Table{a, b}[i%2]); err != nil {
				errc <- err
				return
			}
			swaps++
		}
	}()
	var mu sync.Mutex
	counts := map[netip.AddrPort][2]int{}
	var wg sync.WaitGroup
	for _, addr := range []netip.AddrPort{allowed, denied, flipping} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out, err := helper(t, cg, "connect-loop", addr.String(), "1500ms").Output()
			var ok, refused int
			if _, serr := fmt.Sscan(string(out), &ok, &refused); err != nil || serr != nil {
				t.Errorf("connect loop: %v %v: %s", err, serr, out)
				return
			}
			mu.Lock()
			counts[addr] = [2]int{ok, refused}
			mu.Unlock()
		}()
	}
	wg.Wait()
	close(stop)
	if err := <-errc; err != nil {
		t.Fatalf("apply: %v", err)
	}
	t.Logf("%d swaps; allowed/refused: allowed %v, denied %v, flipping %v",
		swaps, counts[allowed], counts[denied], counts[flipping])
	if c := counts[allowed]; c[1] != 0 || c[0] == 0 {
		t.Errorf("destination both tables allow: %d allowed, %d refused", c[0], c[1])
	}
	if c := counts[denied]; c[0] != 0 || c[1] == 0 {
		t.Errorf("destination both tables deny: %d allowed, %d refused", c[0], c[1])
	}
	if c := counts[flipping]; c[0] == 0 || c[1] == 0 {
		t.Errorf("destination one table denies: %d allowed, %d refused; want both", c[0], c[1])
	}
	if swaps < 5 {
		t.Errorf("only %d table changes during the connects", swaps)
	}
	assertPendingEmpty(t, d)
}

// connectUntilEPERM connects until one is refused with EPERM and prints the
// wall-clock time of that refusal in nanoseconds.
func connectUntilEPERM(addr string) int {
	deadline := time.Now().Add(10 * time.Second)
	fmt.Println("ready")
	for time.Now().Before(deadline) {
		if errnoExit(rawConnect(addr, unix.SOCK_STREAM)) == exitEPERM {
			fmt.Println(time.Now().UnixNano())
			return exitOK
		}
	}
	fmt.Fprintln(os.Stderr, "no EPERM within 10s")
	return exitOther
}

// BenchmarkPendingDenies measures finding the overlay denies of a table of
// 100k entries with one deny appended, the work ApplyTable does before the
// deny reaches the kernel, with tables of denies and of allows (allows
// must each be checked for precedence over the new deny).
func BenchmarkPendingDenies(b *testing.B) {
	for _, v := range []Verdict{VerdictDeny, VerdictAllow} {
		prev := benchTable(100_000)
		for i := range prev.Egress {
			prev.Egress[i].Verdict = v
		}
		next := prev
		next.Egress = append(slices.Clone(prev.Egress),
			portRule(1<<30, "127.0.0.1/32", 80, ProtoTCP, VerdictDeny))
		b.Run(fmt.Sprintf("100k-%s", map[Verdict]string{VerdictDeny: "denies", VerdictAllow: "allows"}[v]),
			func(b *testing.B) {
				for b.Loop() {
					p, ok, err := findPendingDenies(&prev, next)
					if err != nil || !ok || p.entries() != 1 {
						b.Fatalf("overlay of %d entries, ok %v, err %v", p.entries(), ok, err)
					}
				}
			})
	}
}

// TestPendDenies checks that denies handed over ahead of their table are
// enforced at once unless an allow could precede them, and leave with
// ClearPending or the next ApplyTable.
func TestPendDenies(t *testing.T) {
	d, cg := openScoped(t, Config{})
	target := listenTCP(t, "127.0.0.1:0")
	shielded := listenTCP(t, "127.0.0.1:0")
	base := Table{Egress: []EgressRule{portRule(1, "127.0.0.1/32", shielded.Port(), ProtoTCP, VerdictAllow)}}
	early := []EgressRule{portRule(2, "127.0.0.0/8", 0, ProtoTCP, VerdictDeny)}
	if n, err := d.PendDenies(early, nil); err != nil || n != 0 {
		t.Fatalf("before any table: %d denies, %v; want none", n, err)
	}
	if err := d.ApplyTable(base); err != nil {
		t.Fatal(err)
	}
	deny := portRule(3, "127.0.0.0/8", target.Port(), ProtoTCP, VerdictDeny)
	tests := []struct {
		name   string
		egress []EgressRule
		want   int
	}{
		{"deny no allow precedes", []EgressRule{deny}, 1},
		{"deny under an allow in force",
			[]EgressRule{portRule(4, "127.0.0.0/8", shielded.Port(), ProtoTCP, VerdictDeny)}, 0},
		{"deny under an appended allow",
			[]EgressRule{deny, portRule(5, "127.0.0.1/32", 0, ProtoAny, VerdictAllow)}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n, err := d.PendDenies(tt.egress, nil)
			if err != nil || n != tt.want {
				t.Fatalf("PendDenies: %d, %v; want %d", n, err, tt.want)
			}
			want := exitOK
			if tt.want > 0 {
				want = exitEPERM
			}
			if got := runHelperExit(t, cg, "connect", target.String()); got != want {
				t.Errorf("connect to the deny's target: exit %d, want %d", got, want)
			}
			if got := runHelperExit(t, cg, "connect", shielded.String()); got != exitOK {
				t.Errorf("connect the allow admits: exit %d, want success", got)
			}
			if err := d.ClearPending(); err != nil {
				t.Fatal(err)
			}
			assertPendingEmpty(t, d)
		})
	}

	if _, err := d.PendDenies([]EgressRule{deny}, nil); err != nil {
		t.Fatal(err)
	}
	if err := d.ApplyTable(base); err != nil {
		t.Fatal(err)
	}
	assertPendingEmpty(t, d)
	if got := runHelperExit(t, cg, "connect", target.String()); got != exitOK {
		t.Errorf("connect after a table without the deny: exit %d, want success", got)
	}
}

// TestIngressPendingDenies runs the ingress program on packets while
// denies wait in the ingress overlay, ahead of their table.
func TestIngressPendingDenies(t *testing.T) {
	d, _ := openScoped(t, Config{})
	table := Table{
		ProtectedPorts: []PortRange{{Min: 8000, Max: 8099, Proto: ProtoTCP, Default: VerdictAllow}},
		Ingress: []IngressRule{{RuleID: 1, Peer: prefix("10.1.0.0/16"), PortMin: 8000, PortMax: 8010,
			Proto: ProtoTCP, Verdict: VerdictAllow}},
	}
	if err := d.ApplyTable(table); err != nil {
		t.Fatal(err)
	}
	type packet struct {
		src   string
		dport uint16
		want  uint32 // 1 passes, 0 drops
	}
	tests := []struct {
		name    string
		deny    IngressRule
		written int
		packets []packet
	}{
		{"new peer denied on its port", ingressRule(2, "192.0.2.0/24", 8050, VerdictDeny), 1,
			[]packet{{"192.0.2.7", 8050, 0}, {"192.0.2.7", 8051, 1}, {"198.51.100.1", 8050, 1}}},
		{"longer deny inside an allow", ingressRule(3, "10.1.2.0/24", 8005, VerdictDeny), 1,
			[]packet{{"10.1.2.3", 8005, 0}, {"10.1.9.9", 8005, 1}}},
		{"shorter deny under an allow waits", ingressRule(4, "10.0.0.0/8", 8003, VerdictDeny), 0,
			[]packet{{"10.1.9.9", 8003, 1}}},
		{"deny outside protected ports waits", ingressRule(5, "192.0.2.0/24", 9000, VerdictDeny), 0,
			[]packet{{"192.0.2.7", 9000, 1}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n, err := d.PendDenies(nil, []IngressRule{tt.deny})
			if err != nil || n != tt.written {
				t.Fatalf("PendDenies: %d, %v; want %d", n, err, tt.written)
			}
			for _, p := range tt.packets {
				pkt := ipv4TCP(p.src, "192.0.2.100", 40000, p.dport, 0x02)
				ret, err := d.objs.VigilIngress.Run(&ebpf.RunOptions{Data: pkt})
				if err != nil {
					t.Fatalf("test run: %v", err)
				}
				if ret != p.want {
					t.Errorf("packet from %s to port %d: verdict %d, want %d", p.src, p.dport, ret, p.want)
				}
			}
			if err := d.ClearPending(); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestCutOnlyChangeSkipsSwap checks that a table differing only in its cut
// peers and kill list is applied without a table swap, and one with other
// rules with one.
func TestCutOnlyChangeSkipsSwap(t *testing.T) {
	d, _ := openScoped(t, Config{})
	base := benchTable(10)
	withCut := base
	withCut.Cut = []Peer{{Addr: netip.MustParseAddr("192.0.2.9")}}
	withCut.KillOnExec = []ExecIdentity{{Dev: 1, Ino: 2}}
	changed := withCut
	changed.DefaultEgress = VerdictAudit
	tests := []struct {
		name      string
		table     Table
		wantSwaps uint32
	}{
		{"first table", base, 1},
		{"same rules", base, 0},
		{"cut and kill list only", withCut, 0},
		{"default changed", changed, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := generation(t, d)
			if err := d.ApplyTable(tt.table); err != nil {
				t.Fatal(err)
			}
			if swaps := generation(t, d) - before; swaps != tt.wantSwaps {
				t.Errorf("%d table swaps, want %d", swaps, tt.wantSwaps)
			}
		})
	}
	var origin uint8
	if err := d.objs.CutPeers.Lookup(&bpfCutKey{Addr: netip.MustParseAddr("192.0.2.9").As16()}, &origin); err != nil {
		t.Errorf("cut peer of the table without a swap: %v", err)
	}
}

// generation returns the generation of the live table slot.
func generation(t *testing.T, d *Dataplane) uint32 {
	t.Helper()
	var slot uint32
	var s bpfTableSettings
	if err := d.objs.ActiveSlot.Lookup(uint32(0), &slot); err != nil {
		t.Fatal(err)
	}
	if err := d.objs.Settings.Lookup(slot&1, &s); err != nil {
		t.Fatal(err)
	}
	return s.Generation
}
