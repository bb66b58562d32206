package export

import (
	"encoding/json"
	"testing"
	"time"

	vigilpb "github.com/vigilsec/vigil/gen/vigil/v1"
)

const sumA = "4b227777d4dd1fc61c6f884f48641d02b4d121d3fd328cb08b5531fcacdabf8a"

var t0 = time.Date(2026, 12, 4, 16, 0, 0, 123_456_789, time.UTC)

func procA() *vigilpb.Process {
	return &vigilpb.Process{
		Pid: 4242, StartTimeNs: 987654321, Ppid: 1, Uid: 1000, User: "alice", Gid: 1000,
		Executable: "/usr/bin/curl", Sha256: sumA, Args: []string{"curl", "-s", "http://x"},
		CgroupId: 77, ExeDev: 2049, ExeInode: 1234, Comm: "curl", ParentExecutable: "/bin/bash",
	}
}

// encode maps ev and decodes the JSON generically, as a consumer would.
func encode(t *testing.T, ev *vigilpb.Event) map[string]any {
	t.Helper()
	data, err := json.Marshal(Mapper{ProductVersion: "0.1.0"}.Map(ev))
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(data, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

// get walks a dotted path through decoded JSON ("a.b.0.c").
func get(m any, path ...any) any {
	for _, p := range path {
		switch k := p.(type) {
		case string:
			obj, ok := m.(map[string]any)
			if !ok {
				return nil
			}
			m = obj[k]
		case int:
			arr, ok := m.([]any)
			if !ok || k >= len(arr) {
				return nil
			}
			m = arr[k]
		}
	}
	return m
}

type field struct {
	path []any
	want any // numbers as float64, as encoding/json decodes them
}

func f(want any, path ...any) field { return field{path: path, want: want} }

func TestMapOCSF(t *testing.T) {
	common := []field{
		f("Vigil", "metadata", "product", "name"), f("0.1.0", "metadata", "product", "version"),
		f(SchemaVersion, "metadata", "version"), f(float64(t0.UnixMilli()), "time"),
	}
	tests := []struct {
		name   string
		ev     *vigilpb.Event
		fields []field
	}{
		{
			name: "exec",
			ev: &vigilpb.Event{Seq: 7, Kind: vigilpb.EventKind_EVENT_KIND_EXEC, TimeUnixNano: t0.UnixNano(),
				Agent: "laptop-7", Process: procA()},
			fields: []field{
				f(1007.0, "class_uid"), f(1.0, "category_uid"), f(1.0, "activity_id"), f(100701.0, "type_uid"),
				f(1.0, "severity_id"), f("Informational", "severity"), f(7.0, "metadata", "sequence"),
				f("laptop-7", "device", "name"), f(4242.0, "process", "pid"), f("4242@987654321", "process", "uid"),
				f("curl -s http://x", "process", "cmd_line"), f("/usr/bin/curl", "process", "file", "path"),
				f("curl", "process", "file", "name"), f(3.0, "process", "file", "hashes", 0, "algorithm_id"),
				f(sumA, "process", "file", "hashes", 0, "value"), f("1000", "process", "user", "uid"),
				f("alice", "actor", "user", "name"), f(1.0, "actor", "process", "pid"),
				f("/bin/bash", "actor", "process", "file", "path"),
				f("exec", "unmapped", "kind"), f(987654321.0, "unmapped", "start_time_ns"),
				f(1234.0, "unmapped", "exe_inode"), f(77.0, "unmapped", "cgroup_id"),
			},
		},
		{
			name: "exit",
			ev: &vigilpb.Event{Kind: vigilpb.EventKind_EVENT_KIND_EXIT, TimeUnixNano: t0.UnixNano(),
				Agent: "laptop-7", Process: procA(), ExitCode: 0, Signal: 9},
			fields: []field{f(1007.0, "class_uid"), f(2.0, "activity_id"), f(100702.0, "type_uid"),
				f(0.0, "exit_code"), f(9.0, "unmapped", "signal"), f("Process Activity: Terminate", "type_name")},
		},
		{
			name: "connect denied",
			ev: &vigilpb.Event{Kind: vigilpb.EventKind_EVENT_KIND_CONNECT, TimeUnixNano: t0.UnixNano(),
				Agent: "laptop-7", Process: procA(), Connection: &vigilpb.Connection{
					Protocol: vigilpb.Protocol_PROTOCOL_TCP, LocalAddress: "10.0.0.2", LocalPort: 40000,
					RemoteAddress: "198.51.100.7", RemotePort: 443, Verdict: vigilpb.Verdict_VERDICT_DENY, RuleId: 12}},
			fields: []field{f(4001.0, "class_uid"), f(4.0, "category_uid"), f(5.0, "activity_id"),
				f(400105.0, "type_uid"), f(2.0, "action_id"), f(2.0, "disposition_id"), f(3.0, "severity_id"),
				f("10.0.0.2", "src_endpoint", "ip"), f(40000.0, "src_endpoint", "port"),
				f("198.51.100.7", "dst_endpoint", "ip"), f(443.0, "dst_endpoint", "port"),
				f("tcp", "connection_info", "protocol_name"), f(6.0, "connection_info", "protocol_num"),
				f(2.0, "connection_info", "direction_id"), f(4242.0, "actor", "process", "pid"),
				f("deny", "unmapped", "verdict"), f(12.0, "unmapped", "rule_id")},
		},
		{
			name: "accept allowed inbound udp",
			ev: &vigilpb.Event{Kind: vigilpb.EventKind_EVENT_KIND_ACCEPT, TimeUnixNano: t0.UnixNano(),
				Agent: "svc", Connection: &vigilpb.Connection{Protocol: vigilpb.Protocol_PROTOCOL_UDP,
					LocalAddress: "10.0.0.9", LocalPort: 53, RemoteAddress: "10.0.0.2", RemotePort: 5353,
					Verdict: vigilpb.Verdict_VERDICT_ALLOW, Inbound: true}},
			fields: []field{f(4001.0, "class_uid"), f(1.0, "activity_id"), f(1.0, "action_id"),
				f("10.0.0.2", "src_endpoint", "ip"), f(53.0, "dst_endpoint", "port"),
				f(1.0, "connection_info", "direction_id"), f(17.0, "connection_info", "protocol_num"),
				f(nil, "actor")},
		},
		{
			name: "finding",
			ev: &vigilpb.Event{Kind: vigilpb.EventKind_EVENT_KIND_FINDING, TimeUnixNano: t0.UnixNano(),
				Agent: "laptop-7", ServerId: "ev-99", Process: procA(), Finding: &vigilpb.Finding{
					Entity: "process/laptop-7/4242@987654321", Detector: "threat-intel", Severity: "critical",
					Reason: "executable matches indicator--a of feed abuse", Source: "abuse", Level: "untrusted",
					TtlSeconds: 60}},
			fields: []field{f(2004.0, "class_uid"), f(2.0, "category_uid"), f(1.0, "activity_id"),
				f(200401.0, "type_uid"), f(5.0, "severity_id"), f("Critical", "severity"),
				f("ev-99", "finding_info", "uid"), f("executable matches indicator--a of feed abuse", "finding_info", "title"),
				f("threat-intel", "finding_info", "analytic", "name"), f("process", "resources", 0, "type"),
				f("process/laptop-7/4242@987654321", "resources", 0, "uid"),
				f(sumA, "evidences", 0, "process", "file", "hashes", 0, "value"),
				f("abuse", "unmapped", "finding", "source"), f("untrusted", "unmapped", "finding", "level"),
				f(60.0, "unmapped", "finding", "ttl_seconds")},
		},
		{
			name: "fork without details",
			ev:   &vigilpb.Event{Kind: vigilpb.EventKind_EVENT_KIND_FORK, TimeUnixNano: t0.UnixNano(), Agent: "a"},
			fields: []field{f(1007.0, "class_uid"), f(1.0, "activity_id"), f(nil, "actor"),
				f(nil, "process"), f("fork", "unmapped", "kind")},
		},
		{
			name: "connect without details",
			ev:   &vigilpb.Event{Kind: vigilpb.EventKind_EVENT_KIND_CONNECT, TimeUnixNano: t0.UnixNano(), Agent: "a"},
			fields: []field{f(4001.0, "class_uid"), f(nil, "src_endpoint"), f(nil, "actor"),
				f("unspecified", "unmapped", "verdict")},
		},
		{
			name: "level",
			ev: &vigilpb.Event{Kind: vigilpb.EventKind_EVENT_KIND_LEVEL, TimeUnixNano: t0.UnixNano(),
				Entity: "device/laptop-7", Message: "device/laptop-7: high -> untrusted"},
			fields: []field{f(0.0, "class_uid"), f(0.0, "category_uid"), f(99.0, "activity_id"),
				f("level", "activity_name"), f(99.0, "type_uid"), f("device/laptop-7", "unmapped", "entity"),
				f("device/laptop-7: high -> untrusted", "message"), f(nil, "device")},
		},
		{
			name: "loss",
			ev: &vigilpb.Event{Kind: vigilpb.EventKind_EVENT_KIND_LOSS, TimeUnixNano: t0.UnixNano(),
				Agent: "laptop-7", Lost: 31},
			fields: []field{f(0.0, "class_uid"), f("loss", "activity_name"), f(3.0, "severity_id"),
				f(31.0, "unmapped", "lost")},
		},
		{
			name: "instruction",
			ev: &vigilpb.Event{Kind: vigilpb.EventKind_EVENT_KIND_INSTRUCTION, TimeUnixNano: t0.UnixNano(),
				Agent: "laptop-7", Entity: "process/laptop-7/4242@1", Message: "kill"},
			fields: []field{f(0.0, "class_uid"), f("instruction", "activity_name"), f("laptop-7", "unmapped", "agent")},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := encode(t, tt.ev)
			for _, fl := range append(common, tt.fields...) {
				if got := get(m, fl.path...); got != fl.want {
					t.Errorf("%v = %#v, want %#v", fl.path, got, fl.want)
				}
			}
		})
	}
}

func TestMapZeroTime(t *testing.T) {
	m := Mapper{Now: func() time.Time { return t0 }}
	if rec := m.Map(&vigilpb.Event{Kind: vigilpb.EventKind_EVENT_KIND_POLICY}); rec.Time != t0.UnixMilli() {
		t.Fatalf("time = %d, want %d", rec.Time, t0.UnixMilli())
	}
}
