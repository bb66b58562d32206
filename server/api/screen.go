package api

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/proto"

	vigilpb "github.com/vigilsec/vigil/gen/vigil/v1"
	"github.com/vigilsec/vigil/server/metrics"
	"github.com/vigilsec/vigil/server/store"
)

// maxFuture is how far ahead of the server's clock an agent event's time
// may be; a later time is replaced by the time the server received it.
const maxFuture = 5 * time.Minute

// agentKinds are the kinds of event an agent observes. The others (policy,
// instruction, level, finding) are the server's own record, and an agent
// claiming one would write into it.
var agentKinds = map[vigilpb.EventKind]bool{
	vigilpb.EventKind_EVENT_KIND_EXEC:    true,
	vigilpb.EventKind_EVENT_KIND_FORK:    true,
	vigilpb.EventKind_EVENT_KIND_EXIT:    true,
	vigilpb.EventKind_EVENT_KIND_CONNECT: true,
	vigilpb.EventKind_EVENT_KIND_ACCEPT:  true,
	vigilpb.EventKind_EVENT_KIND_LOSS:    true,
}

// newRefusedCounter counts refused agent events by kind, in m's registry
// when there is one.
func newRefusedCounter(m *metrics.Metrics) *prometheus.CounterVec {
	c := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "vigil_server_agent_events_refused_total",
		Help: "Agent events refused because an agent may not send their kind, by kind.",
	}, []string{"kind"})
	if m != nil {
		m.Registerer().MustRegister(c)
	}
	return c
}

// screen sorts an agent's events into those to store and those refused.
// A refused event is dropped and counted, not answered with an error: its
// sequence number still counts as received, so the agent's spool drains
// and the stream goes on. Events timed too far ahead of now are stored
// with now as their time, and an agent event never carries a finding.
func (s *Server) screen(agent string, evs []*vigilpb.Event, now time.Time) store.Batch {
	var b store.Batch
	for _, ev := range evs {
		if !agentKinds[ev.GetKind()] {
			b.Refused = append(b.Refused, ev.GetSeq())
			s.refused.WithLabelValues(ev.GetKind().String()).Inc()
			continue
		}
		future := ev.GetTimeUnixNano() > now.Add(maxFuture).UnixNano()
		named := ev.GetConnection().GetRuleId() != 0 || ev.GetConnection().GetRule() != ""
		if future || ev.GetFinding() != nil || named {
			ev = proto.CloneOf(ev)
			ev.Finding = nil
			if future {
				ev.TimeUnixNano = now.UnixNano()
			}
			if c := ev.GetConnection(); c != nil {
				c.Rule = s.cfg.Engine.RuleName(c.GetRuleId())
			}
		}
		b.Events = append(b.Events, ev)
	}
	if len(b.Refused) > 0 {
		s.log.Warn("agent events of a server kind refused", "agent", agent, "count", len(b.Refused))
	}
	return b
}
