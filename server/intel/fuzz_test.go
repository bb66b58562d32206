package intel

import (
	"bytes"
	"encoding/hex"
	"testing"
	"time"

	"github.com/vigilsec/vigil/policy"
)

// checkIndicators asserts what every parsed indicator must satisfy.
func checkIndicators(t *testing.T, res *Result, feed string) {
	t.Helper()
	for _, ind := range res.Indicators {
		if ind.Source != feed || ind.ID == "" || ind.Confidence < 0 || ind.Confidence > 100 {
			t.Fatalf("bad metadata: %+v", ind)
		}
		switch ind.Kind {
		case policy.IndicatorIP:
			if !ind.Prefix.IsValid() || ind.Prefix != ind.Prefix.Masked() || ind.SHA256 != "" {
				t.Fatalf("bad ip indicator: %+v", ind)
			}
		case policy.IndicatorSHA256:
			if _, err := hex.DecodeString(ind.SHA256); err != nil || len(ind.SHA256) != 64 ||
				bytes.ContainsAny([]byte(ind.SHA256), "ABCDEF") || ind.Prefix.IsValid() {
				t.Fatalf("bad sha256 indicator: %+v", ind)
			}
		default:
			t.Fatalf("bad kind: %+v", ind)
		}
	}
}

func FuzzCSV(f *testing.F) {
	f.Add([]byte("type,value,confidence\nipv4,198.51.100.7,80\ncidr,2001:db8::/32,1\n"))
	f.Add([]byte("sha256," + hashA + "\n# comment\ndomain,x,1\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		res, err := ParseCSV(bytes.NewReader(data), "fuzz.csv", "fuzz")
		if err != nil {
			return
		}
		checkIndicators(t, res, "fuzz")
	})
}

func FuzzSTIX(f *testing.F) {
	f.Add([]byte(bundle(indicator("a", "[ipv4-addr:value = '198.51.100.7'] OR [ipv6-addr:value = '2001:db8::/32']", ""))))
	f.Add([]byte(bundle(indicator("b", "[file:hashes.'SHA-256' = '"+hashA+"' OR ipv4-addr:value = '10.0.0.0/8']", `,"confidence":3`))))
	f.Fuzz(func(t *testing.T, data []byte) {
		now := time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC)
		res, err := ParseSTIX(bytes.NewReader(data), "fuzz.json", "fuzz", now)
		if err != nil {
			return
		}
		checkIndicators(t, res, "fuzz")
	})
}
