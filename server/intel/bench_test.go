package intel

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// BenchmarkParseSTIX measures parsing a bundle of 10,000 indicators.
func BenchmarkParseSTIX(b *testing.B) {
	objs := make([]string, 10_000)
	for i := range objs {
		objs[i] = indicator(fmt.Sprint(i), fmt.Sprintf("[ipv4-addr:value = '10.%d.%d.0/24']", i/256, i%256), "")
	}
	data := bundle(objs...)
	now := time.Now()
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		res, err := ParseSTIX(strings.NewReader(data), "bench.json", "bench", now)
		if err != nil || len(res.Indicators) != len(objs) {
			b.Fatal(err)
		}
	}
}

// BenchmarkParseCSV measures parsing 10,000 CSV records.
func BenchmarkParseCSV(b *testing.B) {
	var sb strings.Builder
	for i := range 10_000 {
		fmt.Fprintf(&sb, "ipv4,10.0.%d.%d,80\n", i/256, i%256)
	}
	data := sb.String()
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		if _, err := ParseCSV(strings.NewReader(data), "bench.csv", "bench"); err != nil {
			b.Fatal(err)
		}
	}
}
