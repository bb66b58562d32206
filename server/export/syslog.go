package export

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"
)

// Syslog defaults.
const (
	// DefaultFacility is local0.
	DefaultFacility = 16
	// sdID is the structured-data id; 32473 is the enterprise number
	// reserved for documentation (RFC 5612).
	sdID = "vigil@32473"
	// maxDatagram is the largest message sent over UDP or unixgram.
	maxDatagram = 65000
	// dialTimeout bounds a connection attempt.
	dialTimeout = 5 * time.Second
	// writeTimeout bounds a write when ctx has no earlier deadline.
	writeTimeout = 10 * time.Second
)

// SyslogOptions tune a SyslogSink; zero values take the defaults.
type SyslogOptions struct {
	Hostname string // HOSTNAME field; os.Hostname()
	AppName  string // APP-NAME field; "vigil"
	Facility int    // 0-23; DefaultFacility when 0
}

// SyslogSink sends each record as an RFC 5424 message whose MSG is the
// record's JSON. Over TCP and unix stream sockets messages are framed by
// octet counting (RFC 6587); over UDP and unixgram each message is one
// datagram. It reconnects once per Write after an error. It is not safe for
// concurrent use; the Exporter calls it from one goroutine.
//
// BUG: over TCP, messages written after the receiver closed the connection
// but before the kernel reports the reset are lost without being counted.
type SyslogSink struct {
	target   string // as configured, for Name
	network  string // tcp, udp, unix or unixgram
	addr     string
	hostname string
	app      string
	facility int
	procID   string
	conn     net.Conn // nil until dialed
}

// NewSyslogSink parses target (tcp://HOST:PORT, udp://HOST:PORT,
// unix:///PATH or unixgram:///PATH); it connects lazily, at the first Write.
func NewSyslogSink(target string, opts SyslogOptions) (*SyslogSink, error) {
	u, err := url.Parse(target)
	if err != nil {
		return nil, fmt.Errorf("syslog target %q: %w", target, err)
	}
	s := &SyslogSink{target: target, network: u.Scheme, procID: strconv.Itoa(os.Getpid())}
	switch u.Scheme {
	case "tcp", "udp":
		s.addr = u.Host
	case "unix", "unixgram":
		s.addr = u.Path
	default:
		return nil, fmt.Errorf("syslog target %q: scheme is not tcp, udp, unix or unixgram", target)
	}
	if s.addr == "" {
		return nil, fmt.Errorf("syslog target %q: no address", target)
	}
	if err := s.setOptions(opts); err != nil {
		return nil, fmt.Errorf("syslog target %q: %w", target, err)
	}
	return s, nil
}

// setOptions applies defaults and checks the header fields.
func (s *SyslogSink) setOptions(opts SyslogOptions) error {
	s.hostname, s.app, s.facility = opts.Hostname, opts.AppName, opts.Facility
	if s.hostname == "" {
		s.hostname, _ = os.Hostname()
	}
	if s.app == "" {
		s.app = "vigil"
	}
	if s.facility == 0 {
		s.facility = DefaultFacility
	}
	s.hostname = headerField(s.hostname, 255)
	s.app = headerField(s.app, 48)
	if s.facility < 0 || s.facility > 23 {
		return fmt.Errorf("facility %d is not 0-23", s.facility)
	}
	return nil
}

// Name implements Sink.
func (s *SyslogSink) Name() string { return "syslog:" + s.target }

// stream reports whether messages need octet-counting framing.
func (s *SyslogSink) stream() bool { return s.network == "tcp" || s.network == "unix" }

// Write implements Sink. A message too large for a datagram is skipped and
// counted as failed; after a connection error it reconnects and retries once.
func (s *SyslogSink) Write(ctx context.Context, items []Item) (int, error) {
	var errs []error
	done, failed := 0, 0
	for attempt := 0; attempt < 2 && done < len(items); attempt++ {
		n, skipped, err := s.send(ctx, items[done:])
		done, failed = done+n, failed+len(skipped)
		errs = append(errs, skipped...)
		if err == nil {
			break
		}
		errs = append(errs, err)
		s.drop()
		if ctx.Err() != nil {
			break
		}
	}
	return failed + len(items) - done, errors.Join(errs...)
}

// send writes items on the current connection, dialing if needed. It
// returns how many items it consumed (sent or skipped as too large), the
// errors of the skipped ones, and the connection error that stopped it.
func (s *SyslogSink) send(ctx context.Context, items []Item) (int, []error, error) {
	if s.conn == nil {
		d := net.Dialer{Timeout: dialTimeout}
		conn, err := d.DialContext(ctx, s.network, s.addr)
		if err != nil {
			return 0, nil, fmt.Errorf("dial syslog: %w", err)
		}
		s.conn = conn
	}
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = time.Now().Add(writeTimeout)
	}
	s.conn.SetWriteDeadline(deadline)

	var skipped []error
	for i, it := range items {
		msg := s.Format(it)
		if !s.stream() && len(msg) > maxDatagram {
			skipped = append(skipped, fmt.Errorf("message of %d bytes exceeds a datagram", len(msg)))
			continue
		}
		if s.stream() {
			msg = append([]byte(strconv.Itoa(len(msg))+" "), msg...)
		}
		if _, err := s.conn.Write(msg); err != nil {
			return i, skipped, fmt.Errorf("write syslog: %w", err)
		}
	}
	return len(items), skipped, nil
}

// drop closes the connection after an error.
func (s *SyslogSink) drop() {
	if s.conn != nil {
		s.conn.Close()
		s.conn = nil
	}
}

// Close implements Sink.
func (s *SyslogSink) Close() error {
	if s.conn == nil {
		return nil
	}
	err := s.conn.Close()
	s.conn = nil
	return err
}

// Format renders an item as an RFC 5424 message (without framing):
// <PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID [SD] MSG.
func (s *SyslogSink) Format(it Item) []byte {
	r := it.Record
	var b bytes.Buffer
	pri := s.facility*8 + syslogSeverity(r.SeverityID)
	ts := time.UnixMilli(r.Time).UTC().Format("2006-01-02T15:04:05.000Z")
	kind, _ := r.Unmapped["kind"].(string)
	fmt.Fprintf(&b, "<%d>1 %s %s %s %s %s ", pri, ts, s.hostname, s.app, s.procID, headerField(kind, 32))

	b.WriteString("[" + sdID)
	sdParam(&b, "class_uid", strconv.Itoa(r.ClassUID))
	sdParam(&b, "type_uid", strconv.Itoa(r.TypeUID))
	sdParam(&b, "severity_id", strconv.Itoa(r.SeverityID))
	if agent, ok := r.Unmapped["agent"].(string); ok {
		sdParam(&b, "agent", agent)
	}
	if r.Metadata.Sequence != 0 {
		sdParam(&b, "seq", strconv.FormatUint(r.Metadata.Sequence, 10))
	}
	b.WriteString("] ")
	b.Write(it.JSON)
	return b.Bytes()
}

// sdParam appends one structured-data parameter, escaping '"', '\' and ']'.
func sdParam(b *bytes.Buffer, name, value string) {
	b.WriteString(" " + name + `="`)
	for _, c := range value {
		if c == '"' || c == '\\' || c == ']' {
			b.WriteByte('\\')
		}
		b.WriteRune(c)
	}
	b.WriteByte('"')
}

// headerField makes s a valid RFC 5424 header field: printable ASCII without
// spaces, at most max bytes, "-" when empty.
func headerField(s string, max int) string {
	s = strings.Map(func(r rune) rune {
		if r < 33 || r > 126 {
			return -1
		}
		return r
	}, s)
	if len(s) > max {
		s = s[:max]
	}
	if s == "" {
		return "-"
	}
	return s
}

// syslogSeverity maps an OCSF severity id onto a syslog severity.
func syslogSeverity(id int) int {
	switch id {
	case SeverityLow:
		return 5 // notice
	case SeverityMedium:
		return 4 // warning
	case SeverityHigh:
		return 3 // error
	case SeverityCritical:
		return 2 // critical
	}
	return 6 // informational
}
