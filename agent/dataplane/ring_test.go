package dataplane

import (
	"testing"
)

// readConnect reads events until a connect event to port arrives.
func readConnect(t *testing.T, rd *EventReader, port uint16) Event {
	t.Helper()
	for {
		e, err := rd.Read()
		if err != nil {
			t.Fatalf("read: %v", err)
		}
		if e.Kind == EventConnect && e.Remote.Port() == port {
			return e
		}
	}
}

// A reader that dies between reading an event and storing it must not take
// the event with it: the event stays in the ring until the next Read, so the
// next reader of the scope gets it again, and after that Read it is gone.
func TestEventStaysInRingUntilNextRead(t *testing.T) {
	d, cg := openScoped(t, Config{})
	denied := listenTCP(t, "127.0.0.1:0")
	table := Table{DefaultEgress: VerdictAllow, Egress: []EgressRule{
		portRule(1, "127.0.0.1/32", denied.Port(), ProtoTCP, VerdictDeny),
	}}
	if err := d.ApplyTable(table); err != nil {
		t.Fatalf("apply: %v", err)
	}
	if got := runHelperExit(t, cg, "connect", denied.String()); got != exitEPERM {
		t.Fatalf("connect: exit %d, want EPERM", got)
	}

	first, err := d.Events()
	if err != nil {
		t.Fatal(err)
	}
	lost := readConnect(t, first, denied.Port())
	first.Close()

	second, err := d.Events()
	if err != nil {
		t.Fatal(err)
	}
	defer second.Close()
	again, err := second.Read()
	if err != nil {
		t.Fatalf("read again: %v", err)
	}
	if again != lost {
		t.Fatalf("next reader got %+v, want the unreleased %+v", again, lost)
	}

	if got := runHelperExit(t, cg, "connect", denied.String()); got != exitEPERM {
		t.Fatalf("second connect: exit %d, want EPERM", got)
	}
	next := readConnect(t, second, denied.Port())
	if next.TimeNs == lost.TimeNs {
		t.Fatalf("released event read twice: %+v", next)
	}
}
