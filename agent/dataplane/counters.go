package dataplane

import "fmt"

// Counters sums the kernel's per-CPU counters. Verdicts are keyed by
// reason in lower-case words ("egress-deny-rule", "packet-drop-cut").
func (d *Dataplane) Counters() (Counters, error) {
	c := Counters{Verdicts: map[string]uint64{}}
	for i := bpfVigilCounter(0); i < bpfVigilCounterCOUNTER_MAX; i++ {
		var perCPU []uint64
		if err := d.objs.Counters.Lookup(uint32(i), &perCPU); err != nil {
			return c, fmt.Errorf("read counters: %w", err)
		}
		var sum uint64
		for _, v := range perCPU {
			sum += v
		}
		switch i {
		case bpfVigilCounterCOUNTER_EVENTS_EMITTED:
			c.EventsEmitted = sum
		case bpfVigilCounterCOUNTER_EVENTS_LOST:
			c.EventsLost = sum
		default:
			c.Verdicts[counterName(i)] = sum
		}
	}
	return c, nil
}

// counterNames names the verdict counters (enum vigil_counter).
var counterNames = map[bpfVigilCounter]string{
	bpfVigilCounterCOUNTER_EGRESS_ALLOW_RULE:      "egress-allow-rule",
	bpfVigilCounterCOUNTER_EGRESS_ALLOW_DEFAULT:   "egress-allow-default",
	bpfVigilCounterCOUNTER_EGRESS_DENY_RULE:       "egress-deny-rule",
	bpfVigilCounterCOUNTER_EGRESS_DENY_DEFAULT:    "egress-deny-default",
	bpfVigilCounterCOUNTER_EGRESS_AUDIT_RULE:      "egress-audit-rule",
	bpfVigilCounterCOUNTER_EGRESS_AUDIT_DEFAULT:   "egress-audit-default",
	bpfVigilCounterCOUNTER_EGRESS_DENY_CUT:        "egress-deny-cut",
	bpfVigilCounterCOUNTER_EGRESS_DENY_QUARANTINE: "egress-deny-quarantine",
	bpfVigilCounterCOUNTER_INGRESS_ALLOW_RULE:     "ingress-allow-rule",
	bpfVigilCounterCOUNTER_INGRESS_ALLOW_DEFAULT:  "ingress-allow-default",
	bpfVigilCounterCOUNTER_INGRESS_DENY_RULE:      "ingress-deny-rule",
	bpfVigilCounterCOUNTER_INGRESS_DENY_DEFAULT:   "ingress-deny-default",
	bpfVigilCounterCOUNTER_INGRESS_AUDIT:          "ingress-audit",
	bpfVigilCounterCOUNTER_PACKET_DROP_CUT:        "packet-drop-cut",
	bpfVigilCounterCOUNTER_PACKET_DROP_QUARANTINE: "packet-drop-quarantine",
	bpfVigilCounterCOUNTER_KILL_ON_EXEC:           "kill-on-exec",
	bpfVigilCounterCOUNTER_KILL_SIGNAL:            "kill-signal",
	bpfVigilCounterCOUNTER_SOCK_DESTROYED:         "sock-destroyed",
}

// counterName names a verdict counter; an unnamed one by its number.
func counterName(c bpfVigilCounter) string {
	if n, ok := counterNames[c]; ok {
		return n
	}
	return fmt.Sprintf("counter-%d", c)
}
