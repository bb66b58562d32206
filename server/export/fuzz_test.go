package export

import (
	"bytes"
	"encoding/json"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	vigilpb "github.com/vigilsec/vigil/gen/vigil/v1"
)

// FuzzMapHostileEvent maps events whose every field an agent chose: the
// OCSF record must always encode, as one line of valid JSON, so a hostile
// event can neither stop the export nor forge a second line in a JSON-lines
// file or a syslog message.
func FuzzMapHostileEvent(f *testing.F) {
	seeds := []*vigilpb.Event{
		{Seq: 1, Kind: vigilpb.EventKind_EVENT_KIND_EXEC, Agent: "laptop-7", Process: &vigilpb.Process{
			Pid: 42, Executable: "/tmp/x\n{\"forged\":1}", Args: []string{"x", "\x00\u00ff"}, Comm: "x\r"}},
		{Seq: 2, Kind: vigilpb.EventKind_EVENT_KIND_CONNECT, Connection: &vigilpb.Connection{
			RemoteAddress: "not an address", RemotePort: 1 << 20, Verdict: vigilpb.Verdict(99)}},
		{Seq: 3, Kind: vigilpb.EventKind_EVENT_KIND_FINDING, Finding: &vigilpb.Finding{
			Entity: "device/x", Severity: "] injected=\"1\"", Detector: "\u2028"}},
		{Kind: vigilpb.EventKind(1000), TimeUnixNano: -1},
	}
	for _, ev := range seeds {
		b, err := proto.Marshal(ev)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	m := Mapper{ProductVersion: "fuzz", Now: func() time.Time { return time.Unix(1, 0) }}

	f.Fuzz(func(t *testing.T, data []byte) {
		var ev vigilpb.Event
		if proto.Unmarshal(data, &ev) != nil {
			return
		}
		out, err := json.Marshal(m.Map(&ev))
		if err != nil {
			t.Fatalf("encode record of %v: %v", &ev, err)
		}
		if !json.Valid(out) || bytes.ContainsAny(out, "\n\r") {
			t.Fatalf("record is not one line of JSON: %q", out)
		}
	})
}
