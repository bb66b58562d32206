package main

import (
	"errors"
	"fmt"
	"io"
	"net/netip"
	"path"
	"strconv"
	"strings"
	"unicode"

	"github.com/urfave/cli/v2"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	vigilpb "github.com/vigilsec/vigil/gen/vigil/v1"
)

func eventsCommand() *cli.Command {
	return &cli.Command{
		Name:  "events",
		Usage: "the access log and findings (-o json prints one event per line)",
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "follow", Aliases: []string{"F"}, Usage: "stream live events until interrupted"},
			&cli.StringFlag{Name: "agent", Usage: "only agent `A`'s events"},
			&cli.StringSliceFlag{Name: "kind", Usage: "only kind `K` (repeat or comma-separate): " + kindList()},
			&cli.UintFlag{Name: "limit", Usage: "at most `N` stored events, newest kept (default 1000, at most 5000)"},
			outputFlag,
		},
		Action: events,
	}
}

// kindList names the event kinds --kind accepts.
func kindList() string {
	var names []string
	for i := int32(1); ; i++ {
		name, ok := vigilpb.EventKind_name[i]
		if !ok {
			return strings.Join(names, ", ")
		}
		names = append(names, enumName(name, "EVENT_KIND_"))
	}
}

// parseKinds turns --kind values like "connect" into event kinds.
func parseKinds(values []string) ([]vigilpb.EventKind, error) {
	var kinds []vigilpb.EventKind
	for _, v := range values {
		k, ok := vigilpb.EventKind_value["EVENT_KIND_"+strings.ToUpper(strings.TrimSpace(v))]
		if !ok || k == 0 {
			return nil, usageError{fmt.Sprintf("events: unknown kind %q (want %s)", v, kindList())}
		}
		kinds = append(kinds, vigilpb.EventKind(k))
	}
	return kinds, nil
}

func events(c *cli.Context) error {
	asJSON, err := wantJSON(c)
	if err != nil {
		return err
	}
	kinds, err := parseKinds(c.StringSlice("kind"))
	if err != nil {
		return err
	}
	if c.Bool("follow") && c.IsSet("limit") {
		return usageError{"events: --limit applies to stored events, not to --follow"}
	}
	s, err := connect(c)
	if err != nil {
		return err
	}
	defer s.Close()

	emit := eventPrinter(c.App.Writer, asJSON)
	if c.Bool("follow") {
		return followEvents(c, s, kinds, emit)
	}
	return queryEvents(c, s, kinds, emit)
}

func queryEvents(c *cli.Context, s *session, kinds []vigilpb.EventKind, emit func(*vigilpb.Event) error) error {
	ctx, cancel := unary(c)
	defer cancel()
	req := &vigilpb.QueryEventsRequest{Agent: c.String("agent"), Kinds: kinds, Limit: uint32(c.Uint("limit"))}
	resp, err := s.admin.QueryEvents(ctx, req)
	if err != nil {
		return s.fail(err)
	}
	for _, ev := range resp.GetEvents() {
		if err := emit(ev); err != nil {
			return err
		}
	}
	if resp.GetTruncated() {
		fmt.Fprintf(c.App.ErrWriter, "events: %d newest shown; older ones left out to keep the reply "+
			"within the server's message bound, narrow with --agent or --kind\n", len(resp.GetEvents()))
	}
	return nil
}

// followEvents prints live events until the context ends (Ctrl-C), which
// is a normal end, or the server closes the stream.
func followEvents(c *cli.Context, s *session, kinds []vigilpb.EventKind, emit func(*vigilpb.Event) error) error {
	req := &vigilpb.FollowEventsRequest{Agent: c.String("agent"), Kinds: kinds}
	stream, err := s.admin.FollowEvents(c.Context, req)
	if err != nil {
		return s.fail(err)
	}
	for {
		ev, err := stream.Recv()
		switch {
		case errors.Is(err, io.EOF):
			return nil
		case status.Code(err) == codes.Canceled && c.Context.Err() != nil:
			return nil
		case err != nil:
			return s.fail(err)
		}
		if err := emit(ev); err != nil {
			return err
		}
	}
}

// eventPrinter returns a function that prints one event as a JSON line or
// a fixed-width row, so live rows line up without buffering.
func eventPrinter(w io.Writer, asJSON bool) func(*vigilpb.Event) error {
	if asJSON {
		return func(ev *vigilpb.Event) error { return writeJSONLine(w, ev) }
	}
	fmt.Fprintf(w, "%-23s  %-12s  %-11s  %s\n", "TIME", "AGENT", "KIND", "EVENT")
	return func(ev *vigilpb.Event) error {
		agent := ev.GetAgent()
		if agent == "" {
			agent = "server"
		}
		_, err := fmt.Fprintf(w, "%-23s  %-12s  %-11s  %s\n", orDash(nanoTime(ev.GetTimeUnixNano())), agent,
			enumName(ev.GetKind().String(), "EVENT_KIND_"), eventSummary(ev))
		return err
	}
}

// eventSummary describes an event in one line.
func eventSummary(ev *vigilpb.Event) string {
	p := ev.GetProcess()
	switch ev.GetKind() {
	case vigilpb.EventKind_EVENT_KIND_EXEC:
		return strings.TrimSpace(fmt.Sprintf("%s uid %d %s %s", procName(p), p.GetUid(), p.GetExecutable(),
			quoteArgs(p.GetArgs())))
	case vigilpb.EventKind_EVENT_KIND_FORK:
		return fmt.Sprintf("%s forked from %d", procName(p), p.GetPpid())
	case vigilpb.EventKind_EVENT_KIND_EXIT:
		if ev.GetSignal() != 0 {
			return fmt.Sprintf("%s killed by signal %d", procName(p), ev.GetSignal())
		}
		return fmt.Sprintf("%s exited %d", procName(p), ev.GetExitCode())
	case vigilpb.EventKind_EVENT_KIND_CONNECT, vigilpb.EventKind_EVENT_KIND_ACCEPT:
		return connSummary(p, ev.GetConnection())
	case vigilpb.EventKind_EVENT_KIND_FINDING:
		f := ev.GetFinding()
		return fmt.Sprintf("%s %s %s: %s", f.GetEntity(), f.GetSeverity(), f.GetDetector(), f.GetReason())
	case vigilpb.EventKind_EVENT_KIND_LOSS:
		return fmt.Sprintf("%d events lost", ev.GetLost())
	case vigilpb.EventKind_EVENT_KIND_POLICY:
		return ev.GetMessage()
	}
	return strings.TrimSpace(ev.GetEntity() + " " + ev.GetMessage())
}

// connSummary describes a flow as "proc -> peer tcp allow rule 3".
func connSummary(p *vigilpb.Process, conn *vigilpb.Connection) string {
	remote := hostPort(conn.GetRemoteAddress(), conn.GetRemotePort())
	flow := procName(p) + " -> " + remote
	if conn.GetInbound() {
		flow = remote + " -> " + procName(p) + " :" + strconv.Itoa(int(conn.GetLocalPort()))
	}
	verdict := enumName(conn.GetVerdict().String(), "VERDICT_")
	rule := "default"
	switch {
	case conn.GetRule() != "":
		rule = "rule " + conn.GetRule()
	case conn.GetRuleId() != 0:
		rule = "rule " + strconv.Itoa(int(conn.GetRuleId()))
	}
	return fmt.Sprintf("%s %s %s (%s)", flow, enumName(conn.GetProtocol().String(), "PROTOCOL_"), verdict, rule)
}

// quoteArgs joins the arguments after argv[0] (the executable is shown
// instead) on one line, quoting those with spaces or control characters.
func quoteArgs(args []string) string {
	if len(args) < 2 {
		return ""
	}
	out := make([]string, len(args)-1)
	for i, a := range args[1:] {
		out[i] = a
		if a == "" || strings.ContainsFunc(a, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) }) {
			out[i] = strconv.Quote(a)
		}
	}
	return strings.Join(out, " ")
}

// procName names a process as "name[pid]", from its executable or comm.
func procName(p *vigilpb.Process) string {
	name := p.GetComm()
	if p.GetExecutable() != "" {
		name = path.Base(p.GetExecutable())
	}
	if name == "" {
		name = "pid"
	}
	return fmt.Sprintf("%s[%d]", name, p.GetPid())
}

// hostPort joins an address and a port, bracketing IPv6.
func hostPort(addr string, port uint32) string {
	if a, err := netip.ParseAddr(addr); err == nil {
		return netip.AddrPortFrom(a, uint16(port)).String()
	}
	return addr + ":" + strconv.Itoa(int(port))
}
