//go:build integration

package integrate

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vigilsec/vigil/internal/testenv"
	"github.com/vigilsec/vigil/tests/harness"
)

// TestExportsOCSF runs a process that connects out inside a protected
// cgroup and requires the OCSF records of its exec and of its connection,
// and of the server's own policy event, in the JSON-lines file and at a
// syslog receiver on loopback.
func TestExportsOCSF(t *testing.T) {
	testenv.RequireRoot(t)
	jsonl := filepath.Join(t.TempDir(), "events.jsonl")
	syslog := startSyslogReceiver(t)
	srv := harness.StartServerIn(t, "", harness.FreeAddr(t),
		"--export-jsonl", jsonl, "--export-syslog", "tcp://"+syslog.addr)
	applyPolicy(t, srv)
	cg := testenv.NewCgroup(t)
	srv.StartAgent(t, "export-host", cg)

	// The agent's activity: one process connecting to a loopback listener.
	target := startSink(t)
	pid := dialFrom(t, cg, target.String())
	want := expectation{agent: "export-host", pid: pid, port: target.Port}

	deadline := time.Now().Add(10 * time.Second)
	for {
		fileMissing := want.missing(t, fileRecords(t, jsonl))
		syslogMissing := want.missing(t, syslog.records(t))
		if fileMissing == "" && syslogMissing == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 10s the export file lacks %q and syslog lacks %q", fileMissing, syslogMissing)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// expectation is what the exports of one dialing process must hold.
type expectation struct {
	agent string
	pid   int
	port  int
}

// missing names the first expected record recs lack, or returns "".
func (e expectation) missing(t *testing.T, recs []ocsfRecord) string {
	var exec, network, policy bool
	for _, r := range recs {
		if r.Metadata.Product.Name != "Vigil" || r.Metadata.Version == "" || r.Time == 0 ||
			r.TypeUID != r.ClassUID*100+r.ActivityID {
			t.Fatalf("malformed OCSF record %+v", r)
		}
		exec = exec || e.isExec(r)
		network = network || e.isConnect(r)
		policy = policy || (r.ClassUID == 0 && r.Unmapped["kind"] == "policy")
	}
	switch {
	case !exec:
		return fmt.Sprintf("Process Activity launch of pid %d", e.pid)
	case !network:
		return fmt.Sprintf("Network Activity of pid %d to port %d", e.pid, e.port)
	case !policy:
		return "policy Base Event"
	}
	return ""
}

// isExec reports whether r is the Process Activity launch of e's process.
func (e expectation) isExec(r ocsfRecord) bool {
	return r.ClassUID == 1007 && r.CategoryUID == 1 && r.ActivityID == 1 &&
		r.Device != nil && r.Device.Name == e.agent &&
		r.Process != nil && r.Process.PID == e.pid &&
		r.Process.File != nil && r.Process.File.Path == os.Args[0]
}

// isConnect reports whether r is the allowed TCP connection of e's process.
func (e expectation) isConnect(r ocsfRecord) bool {
	return r.ClassUID == 4001 && r.CategoryUID == 4 && r.ActivityID == 1 &&
		r.Device != nil && r.Device.Name == e.agent &&
		r.Actor != nil && r.Actor.Process != nil && r.Actor.Process.PID == e.pid &&
		r.DstEndpoint != nil && r.DstEndpoint.IP == "127.0.0.1" && r.DstEndpoint.Port == e.port &&
		r.ConnectionInfo != nil && r.ConnectionInfo.ProtocolName == "tcp"
}

// fileRecords reads every record of the JSON-lines file so far.
func fileRecords(t *testing.T, path string) []ocsfRecord {
	t.Helper()
	data, err := os.ReadFile(path)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	var recs []ocsfRecord
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		recs = append(recs, decodeRecord(t, sc.Bytes()))
	}
	return recs
}

// startSink listens on loopback and accepts and discards connections until
// the test ends.
func startSink(t *testing.T) *net.TCPAddr {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			io.Copy(io.Discard, c)
			c.Close()
		}
	})
	t.Cleanup(func() { l.Close(); wg.Wait() })
	return l.Addr().(*net.TCPAddr)
}

// syslogReceiver collects RFC 5424 messages framed by octet counting.
type syslogReceiver struct {
	addr string

	mu   sync.Mutex
	msgs [][]byte // guarded by mu
	err  error    // guarded by mu: the first malformed frame
}

// startSyslogReceiver listens on loopback until the test ends.
func startSyslogReceiver(t *testing.T) *syslogReceiver {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &syslogReceiver{addr: l.Addr().String()}
	var wg sync.WaitGroup
	var conns sync.Map
	wg.Go(func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			conns.Store(c, true)
			wg.Go(func() { r.read(c) })
		}
	})
	t.Cleanup(func() {
		l.Close()
		conns.Range(func(c, _ any) bool { c.(net.Conn).Close(); return true })
		wg.Wait()
	})
	return r
}

// read collects frames from one connection until it closes.
func (r *syslogReceiver) read(c net.Conn) {
	br := bufio.NewReader(c)
	for {
		size, err := br.ReadString(' ')
		if err != nil {
			return
		}
		n, err := strconv.Atoi(strings.TrimSuffix(size, " "))
		msg := make([]byte, max(n, 0))
		if err == nil && n > 0 {
			_, err = io.ReadFull(br, msg)
		}
		r.mu.Lock()
		if err != nil && r.err == nil {
			r.err = fmt.Errorf("syslog frame length %q: %w", size, err)
		}
		r.msgs = append(r.msgs, msg)
		r.mu.Unlock()
		if err != nil {
			return
		}
	}
}

// records parses the messages received so far: each must be an RFC 5424
// message whose structured data repeats the JSON record's class_uid.
func (r *syslogReceiver) records(t *testing.T) []ocsfRecord {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.err != nil {
		t.Fatal(r.err)
	}
	var recs []ocsfRecord
	for _, msg := range r.msgs {
		sd, body, ok := bytes.Cut(msg, []byte("] {"))
		if !ok || !bytes.HasPrefix(msg, []byte("<")) || !bytes.Contains(sd, []byte(">1 ")) ||
			!bytes.Contains(sd, []byte("[vigil@32473 ")) {
			t.Fatalf("syslog message is not RFC 5424 with Vigil's structured data: %q", msg)
		}
		rec := decodeRecord(t, append([]byte("{"), body...))
		if !bytes.Contains(sd, []byte(fmt.Sprintf(`class_uid="%d"`, rec.ClassUID))) {
			t.Fatalf("syslog structured data %q disagrees with class_uid %d", sd, rec.ClassUID)
		}
		recs = append(recs, rec)
	}
	return recs
}
