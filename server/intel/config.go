package intel

import (
	"fmt"
	"strings"
	"time"

	"github.com/urfave/cli/v2"
)

// Config is the threat-intelligence part of the server's configuration.
type Config struct {
	Feeds []Feed
}

// Flag names, for the vigil-server command.
const (
	FlagFeed     = "intel-feed"
	FlagInterval = "intel-interval"
)

// Flags returns the command-line flags FromFlags reads:
//
//	--intel-feed NAME=PATH_OR_URL[,csv|stix][,every=DURATION]   (repeatable)
//	--intel-interval DURATION   default reload period (5m)
func Flags() []cli.Flag {
	return []cli.Flag{
		&cli.GenericFlag{
			Name: FlagFeed,
			Usage: "load the threat-intel feed `NAME=PATH_OR_URL[,csv|stix][,every=DURATION]`; " +
				"the format defaults to stix for a .json name, else csv (repeatable)",
			Value: &feedList{},
		},
		&cli.DurationFlag{
			Name:  FlagInterval,
			Usage: "default reload period of intel feeds",
			Value: DefaultInterval,
		},
	}
}

// FromFlags builds a Config from the flags of Flags.
func FromFlags(c *cli.Context) (Config, error) {
	var cfg Config
	list, _ := c.Generic(FlagFeed).(*feedList)
	if list == nil {
		return cfg, nil
	}
	for _, spec := range list.specs {
		f, err := ParseFeedSpec(spec, c.Duration(FlagInterval))
		if err != nil {
			return Config{}, fmt.Errorf("--%s: %w", FlagFeed, err)
		}
		cfg.Feeds = append(cfg.Feeds, f)
	}
	return cfg, nil
}

// ParseFeedSpec parses NAME=PATH_OR_URL[,csv|stix][,every=DURATION]. Options
// are taken from the end, so a URL may itself contain commas. interval is
// used when the spec gives none.
func ParseFeedSpec(spec string, interval time.Duration) (Feed, error) {
	name, loc, ok := strings.Cut(spec, "=")
	if !ok || name == "" || loc == "" {
		return Feed{}, fmt.Errorf("%q is not NAME=PATH_OR_URL[,csv|stix][,every=DURATION]", spec)
	}
	f := Feed{Name: name, Interval: interval}
	for {
		i := strings.LastIndexByte(loc, ',')
		if i < 0 {
			break
		}
		opt := loc[i+1:]
		if d, isEvery := strings.CutPrefix(opt, "every="); isEvery {
			every, err := time.ParseDuration(d)
			if err != nil || every <= 0 {
				return Feed{}, fmt.Errorf("feed %s: every=%q is not a positive duration", name, d)
			}
			f.Interval = every
		} else if opt == string(FormatCSV) || opt == string(FormatSTIX) {
			f.Format = Format(opt)
		} else {
			break
		}
		loc = loc[:i]
	}
	f.Location = loc
	return f, f.validate()
}

// feedList collects repeated --intel-feed values without splitting them on
// commas.
type feedList struct{ specs []string }

func (l *feedList) Set(v string) error { l.specs = append(l.specs, v); return nil }
func (l *feedList) String() string     { return strings.Join(l.specs, " ") }
