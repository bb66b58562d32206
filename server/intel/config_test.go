package intel

import (
	"strings"
	"testing"
	"time"

	"github.com/urfave/cli/v2"
)

func TestParseFeedSpec(t *testing.T) {
	tests := []struct {
		name string
		spec string
		want Feed
		err  string
	}{
		{name: "path", spec: "abuse=/etc/vigil/ips.csv",
			want: Feed{Name: "abuse", Location: "/etc/vigil/ips.csv", Interval: time.Minute}},
		{name: "format and interval", spec: "x=https://127.0.0.1:8443/feed?a=1,b=2,stix,every=30s",
			want: Feed{Name: "x", Location: "https://127.0.0.1:8443/feed?a=1,b=2", Format: FormatSTIX, Interval: 30 * time.Second}},
		{name: "interval first", spec: "x=/f,every=1h,csv",
			want: Feed{Name: "x", Location: "/f", Format: FormatCSV, Interval: time.Hour}},
		{name: "no name", spec: "=/f", err: "is not NAME="},
		{name: "no equals", spec: "/f", err: "is not NAME="},
		{name: "bad interval", spec: "x=/f,every=soon", err: "not a positive duration"},
		{name: "only options", spec: "x=,csv", err: "empty location"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseFeedSpec(tt.spec, time.Minute)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("err = %v, want %q", err, tt.err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("got %+v, %v; want %+v", got, err, tt.want)
			}
		})
	}
}

func TestFromFlags(t *testing.T) {
	var cfg Config
	app := &cli.App{Flags: Flags(), Action: func(c *cli.Context) error {
		var err error
		cfg, err = FromFlags(c)
		return err
	}}
	args := []string{"vigil-server", "--intel-interval", "2m",
		"--intel-feed", "a=/a.csv", "--intel-feed", "b=http://127.0.0.1:1/b,stix,every=10s"}
	if err := app.Run(args); err != nil {
		t.Fatal(err)
	}
	want := []Feed{{Name: "a", Location: "/a.csv", Interval: 2 * time.Minute},
		{Name: "b", Location: "http://127.0.0.1:1/b", Format: FormatSTIX, Interval: 10 * time.Second}}
	if len(cfg.Feeds) != 2 || cfg.Feeds[0] != want[0] || cfg.Feeds[1] != want[1] {
		t.Fatalf("feeds = %+v, want %+v", cfg.Feeds, want)
	}
}
