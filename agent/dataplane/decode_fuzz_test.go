package dataplane

import (
	"bytes"
	"encoding/binary"
	"testing"
	"unsafe"
)

// FuzzDecodeEvent decodes ring buffer records as the kernel could leave
// them: short, padded, with any bytes in the strings and addresses. A record
// shorter than the short form is refused; anything else decodes without
// panic into strings that stop at the first NUL within their field.
func FuzzDecodeEvent(f *testing.F) {
	size := int(unsafe.Sizeof(bpfVigilEvent{}))
	f.Add(make([]byte, size))
	f.Add(make([]byte, shortEvent-1))
	f.Add(make([]byte, shortEvent))
	f.Add(seedConnectRecord(size))
	f.Add(bytes.Repeat([]byte{0xff}, size+8))

	f.Fuzz(func(t *testing.T, raw []byte) {
		ev, err := decodeEvent(raw)
		if len(raw) < shortEvent {
			if err == nil {
				t.Fatalf("decoded a %d-byte record, want an error below %d", len(raw), shortEvent)
			}
			return
		}
		if err != nil {
			t.Fatalf("decode %d bytes: %v", len(raw), err)
		}
		if len(ev.Comm) > 16 || len(ev.Filename) > 256 ||
			bytes.IndexByte([]byte(ev.Comm), 0) >= 0 || bytes.IndexByte([]byte(ev.Filename), 0) >= 0 {
			t.Fatalf("strings not cut at NUL within their field: %q %q", ev.Comm, ev.Filename)
		}
		if ev.Remote.IsValid() && ev.Remote.Addr().Is4In6() || ev.Local.IsValid() && ev.Local.Addr().Is4In6() {
			t.Fatalf("ipv4-mapped address not unmapped: %v %v", ev.Local, ev.Remote)
		}
	})
}

// seedConnectRecord is a denied IPv4 connect as the egress hook writes it.
func seedConnectRecord(size int) []byte {
	e := bpfVigilEvent{Kind: uint8(EventConnect), Pid: 42, Tid: 42, RemotePort: 443,
		Verdict: uint8(VerdictDeny), Proto: uint8(ProtoTCP), RuleId: 3}
	copy(e.RemoteAddr[:], []byte{10: 0xff, 11: 0xff, 12: 198, 13: 51, 14: 100, 15: 7})
	for i, c := range "curl" {
		e.Comm[i] = int8(c)
	}
	var buf bytes.Buffer
	binary.Write(&buf, binary.LittleEndian, e)
	return buf.Bytes()[:size]
}
