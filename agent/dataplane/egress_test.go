package dataplane

import (
	"fmt"
	"net/netip"
	"os"
	"sync"
	"testing"
	"time"
)

// eventWatch collects events in the background until the test ends.
type eventWatch struct {
	mu     sync.Mutex
	events []Event // guarded by mu
}

func watchEvents(t *testing.T, d *Dataplane) *eventWatch {
	t.Helper()
	rd, err := d.Events()
	if err != nil {
		t.Fatalf("events: %v", err)
	}
	w := &eventWatch{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			e, err := rd.Read()
			if err != nil {
				return
			}
			w.mu.Lock()
			w.events = append(w.events, e)
			w.mu.Unlock()
		}
	}()
	t.Cleanup(func() { rd.Close(); <-done })
	return w
}

// wait returns the first event matching ok, failing the test after 3s.
func (w *eventWatch) wait(t *testing.T, what string, ok func(Event) bool) Event {
	t.Helper()
	deadline := time.Now().Add(3 * time.Second)
	for time.Now().Before(deadline) {
		w.mu.Lock()
		for _, e := range w.events {
			if ok(e) {
				w.mu.Unlock()
				return e
			}
		}
		w.mu.Unlock()
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("no %s event", what)
	return Event{}
}

func prefix(s string) netip.Prefix { return netip.MustParsePrefix(s) }

func portRule(id uint32, dest string, port uint16, proto Protocol, v Verdict) EgressRule {
	return EgressRule{RuleID: id, Dest: prefix(dest), PortMin: port, PortMax: port, Proto: proto, Verdict: v}
}

func TestEgressVerdicts(t *testing.T) {
	d, cg := openScoped(t, Config{})
	w := watchEvents(t, d)
	denied4 := listenTCP(t, "127.0.0.1:0")
	allowed4 := listenTCP(t, "127.0.0.1:0")
	denied6 := listenTCP(t, "[::1]:0")
	audited := listenTCP(t, "127.0.0.1:0")
	byUID := listenTCP(t, "127.0.0.1:0")
	byExe := listenTCP(t, "127.0.0.1:0")
	byCgroup := listenTCP(t, "127.0.0.1:0")
	ranged := listenTCP(t, "127.0.0.1:0")
	self, _ := os.Executable()
	exe, err := IdentityOf(self)
	if err != nil {
		t.Fatal(err)
	}
	otherUID := uint32(4242)
	const udpPort = 40999

	uidRule := portRule(5, "127.0.0.1/32", byUID.Port(), ProtoTCP, VerdictDeny)
	uidRule.Subject.UID = &otherUID
	exeRule := portRule(6, "127.0.0.0/8", byExe.Port(), ProtoTCP, VerdictDeny)
	exeRule.Subject.Exec = &exe
	cgRule := portRule(7, "0.0.0.0/0", byCgroup.Port(), ProtoAny, VerdictDeny)
	cgRule.Subject.CgroupID = cg.ID
	rangeRule := EgressRule{RuleID: 8, Dest: prefix("127.0.0.0/8"), PortMin: ranged.Port() - 1,
		PortMax: ranged.Port() + 1, Proto: ProtoTCP, Verdict: VerdictDeny}
	table := Table{DefaultEgress: VerdictAllow, Egress: []EgressRule{
		portRule(1, "127.0.0.0/8", denied4.Port(), ProtoTCP, VerdictDeny),
		portRule(2, "::1/128", denied6.Port(), ProtoTCP, VerdictDeny),
		portRule(3, "127.0.0.1/32", udpPort, ProtoUDP, VerdictDeny),
		portRule(4, "127.0.0.1/32", audited.Port(), ProtoAny, VerdictAudit),
		uidRule, exeRule, cgRule, rangeRule,
		portRule(9, "127.0.0.1/32", allowed4.Port(), ProtoUDP, VerdictDeny),
		portRule(10, "::1/128", udpPort, ProtoUDP, VerdictDeny),
	}}
	if err := d.ApplyTable(table); err != nil {
		t.Fatalf("apply: %v", err)
	}

	mapped := func(ap netip.AddrPort) string {
		return netip.AddrPortFrom(netip.AddrFrom16(ap.Addr().As16()), ap.Port()).String()
	}
	udp := fmt.Sprintf("127.0.0.1:%d", udpPort)
	tests := []struct {
		name, mode, addr string
		want             int
	}{
		{"tcp4 denied by prefix and port", "connect", denied4.String(), exitEPERM},
		{"tcp4 other port allowed by default", "connect", allowed4.String(), exitOK},
		{"tcp6 denied", "connect", denied6.String(), exitEPERM},
		{"tcp to ipv4-mapped judged by ipv4 rule", "connect", mapped(denied4), exitEPERM},
		{"ipv4-mapped allowed", "connect", mapped(allowed4), exitOK},
		{"udp sendto denied", "sendto", udp, exitEPERM},
		{"udp sendto ipv4-mapped denied", "sendto", "[::ffff:127.0.0.1]:" + fmt.Sprint(udpPort), exitEPERM},
		{"udp6 sendto denied", "sendto", fmt.Sprintf("[::1]:%d", udpPort), exitEPERM},
		{"tcp to 0.0.0.0 judged as loopback", "connect", fmt.Sprintf("0.0.0.0:%d", denied4.Port()), exitEPERM},
		{"tcp to ::ffff:0.0.0.0 judged as loopback", "connect", fmt.Sprintf("[::ffff:0.0.0.0]:%d", denied4.Port()), exitEPERM},
		{"tcp to :: judged as ::1", "connect", fmt.Sprintf("[::]:%d", denied6.Port()), exitEPERM},
		{"udp sendto 0.0.0.0 judged as loopback", "sendto", fmt.Sprintf("0.0.0.0:%d", udpPort), exitEPERM},
		{"udp sendto to a tcp-only rule's port allowed", "sendto", denied4.String(), exitOK},
		{"audit allows", "connect", audited.String(), exitOK},
		{"uid subject not matching allows", "connect", byUID.String(), exitOK},
		{"executable subject denies", "connect", byExe.String(), exitEPERM},
		{"cgroup subject denies", "connect", byCgroup.String(), exitEPERM},
		{"port range denies", "connect", ranged.String(), exitEPERM},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := runHelperExit(t, cg, tt.mode, tt.addr); got != tt.want {
				t.Errorf("%s %s: exit %d, want %d", tt.mode, tt.addr, got, tt.want)
			}
		})
	}

	e := w.wait(t, "audit", func(e Event) bool { return e.Kind == EventConnect && e.RuleID == 4 })
	if e.Verdict != VerdictAudit || e.Remote != audited || e.Proto != ProtoTCP || e.CgroupID != cg.ID {
		t.Errorf("audit event = %+v", e)
	}
	e = w.wait(t, "mapped deny", func(e Event) bool {
		return e.Kind == EventConnect && e.RuleID == 1 && e.Verdict == VerdictDeny
	})
	if e.Remote != denied4 {
		t.Errorf("mapped deny reported remote %v, want %v", e.Remote, denied4)
	}
	c, err := d.Counters()
	if err != nil {
		t.Fatal(err)
	}
	if c.Verdicts["egress-deny-rule"] < 7 || c.Verdicts["egress-audit-rule"] < 1 || c.EventsEmitted == 0 {
		t.Errorf("counters = %+v", c)
	}
}

func TestEgressSwapIsAtomic(t *testing.T) {
	d, cg := openScoped(t, Config{})
	denied := listenTCP(t, "127.0.0.1:0")
	allowed := listenTCP(t, "127.0.0.1:0")
	filler := make([]EgressRule, 2000)
	for i := range filler {
		filler[i] = portRule(uint32(100+i), fmt.Sprintf("198.18.%d.%d/32", i/256, i%256), 80, ProtoTCP, VerdictDeny)
	}
	tables := []Table{
		{Egress: append([]EgressRule{portRule(1, "127.0.0.1/32", denied.Port(), ProtoTCP, VerdictDeny)}, filler...)},
		{DefaultEgress: VerdictDeny, Egress: append([]EgressRule{
			portRule(2, "127.0.0.0/8", allowed.Port(), ProtoTCP, VerdictAllow)}, filler[:1000]...)},
	}
	if err := d.ApplyTable(tables[0]); err != nil {
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
			if err := d.ApplyTable(tables[i%2]); err != nil {
				errc <- err
				return
			}
			swaps++
		}
	}()
	var wg sync.WaitGroup
	for _, tc := range []struct {
		addr        netip.AddrPort
		wantAllowed bool
	}{{denied, false}, {allowed, true}} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out, err := helper(t, cg, "connect-loop", tc.addr.String(), "1500ms").Output()
			var ok, refused int
			if _, serr := fmt.Sscan(string(out), &ok, &refused); err != nil || serr != nil {
				t.Errorf("connect loop: %v %v: %s", err, serr, out)
				return
			}
			if tc.wantAllowed && refused != 0 || !tc.wantAllowed && ok != 0 {
				t.Errorf("connects to %v during swaps: %d allowed, %d denied", tc.addr, ok, refused)
			}
			t.Logf("%v: %d allowed, %d denied", tc.addr, ok, refused)
		}()
	}
	wg.Wait()
	close(stop)
	if err := <-errc; err != nil {
		t.Fatalf("apply: %v", err)
	}
	if swaps < 5 {
		t.Errorf("only %d swaps happened during the connects", swaps)
	}
	t.Logf("%d table swaps", swaps)
}
