package registry

import (
	"errors"
	"testing"

	"go.uber.org/goleak"

	vigilpb "github.com/vigilsec/vigil/gen/vigil/v1"
	"github.com/vigilsec/vigil/server/store"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type fakeConn struct{ closed error }

func (c *fakeConn) Close(err error) { c.closed = err }

func openRegistry(t *testing.T, dir string) (*Registry, *store.Store) {
	t.Helper()
	st, err := store.Open(store.Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	r, err := New(st)
	if err != nil {
		st.Close()
		t.Fatal(err)
	}
	return r, st
}

func TestLifecycle(t *testing.T) {
	dir := t.TempDir()
	r, st := openRegistry(t, dir)
	steps := []struct {
		name string
		do   func() error
		want error
	}{
		{name: "enroll", do: func() error { return r.Enroll("a", "1", "t1") }},
		{name: "name taken", do: func() error { return r.Enroll("a", "2", "t2") }, want: ErrNameTaken},
		{name: "current cert may connect", do: func() error { return r.Check("a", "1") }},
		{name: "unknown agent", do: func() error { return r.Check("b", "1") }, want: ErrUnknown},
		{name: "foreign serial", do: func() error { return r.Check("a", "9") }, want: ErrStaleCert},
		{name: "revoke", do: func() error { return r.Revoke("a") }},
		{name: "revoked refused", do: func() error { return r.Check("a", "1") }, want: ErrRevoked},
		{name: "revoked name enrolls again", do: func() error { return r.Enroll("a", "3", "t3") }},
		{name: "old cert superseded", do: func() error { return r.Check("a", "1") }, want: ErrStaleCert},
		{name: "new cert accepted", do: func() error { return r.Check("a", "3") }},
	}
	for _, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			if err := s.do(); !errors.Is(err, s.want) {
				t.Fatalf("err %v, want %v", err, s.want)
			}
		})
	}
	if _, err := st.AddInstruction("a", &vigilpb.Instruction{Pid: 1}); err != nil {
		t.Fatal(err)
	}
	must(t, r.Revoke("a"))
	must(t, r.Enroll("a", "4", "t4"))
	if pending, _ := st.PendingInstructions("a"); len(pending) != 0 {
		t.Fatalf("re-enrolled agent inherits %d pending instructions", len(pending))
	}
	must(t, r.Enroll("gone", "5", "t5"))
	must(t, r.Revoke("gone"))
	st.Close()

	r, st = openRegistry(t, dir)
	defer st.Close()
	if err := r.Check("gone", "5"); !errors.Is(err, ErrRevoked) {
		t.Fatalf("revocation after reopen: %v, want ErrRevoked", err)
	}
	if err := r.Check("a", "4"); err != nil {
		t.Fatalf("re-enrolled agent after reopen: %v", err)
	}
}

func TestOnlineOffline(t *testing.T) {
	r, st := openRegistry(t, t.TempDir())
	defer st.Close()
	must(t, r.Enroll("a", "1", "t"))
	first, second := &fakeConn{}, &fakeConn{}
	hello := &vigilpb.Hello{Name: "a", Addresses: []string{"10.0.0.1"}, Scope: "/vigil/a"}

	must(t, r.Online("a", "1", hello, first))
	must(t, r.Online("a", "1", hello, second))
	if !errors.Is(first.closed, ErrReplaced) {
		t.Fatalf("first stream closed with %v, want ErrReplaced", first.closed)
	}
	must(t, r.Offline("a", first))
	if r.Conn("a") != second {
		t.Fatal("offline of a replaced stream took the current one down")
	}

	must(t, r.TableAcked("a", 7))
	must(t, r.Counters("a", &vigilpb.Counters{EventsLost: 3}))
	list := r.List()
	if len(list) != 1 || !list[0].Online || list[0].TableVersion != 7 || list[0].EventsLost != 3 ||
		list[0].Scope != "/vigil/a" || list[0].Addresses[0] != "10.0.0.1" {
		t.Fatalf("list: %v", list)
	}

	must(t, r.Revoke("a"))
	if !errors.Is(second.closed, ErrRevoked) || r.Conn("a") != nil {
		t.Fatalf("revoke closed the stream with %v", second.closed)
	}
	if err := r.Online("a", "1", hello, first); !errors.Is(err, ErrRevoked) {
		t.Fatalf("revoked agent online: %v", err)
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
