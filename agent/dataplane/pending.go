package dataplane

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/cilium/ebpf"
)

// Limits of the pending-deny overlays, as sized in bpf/common.h and
// bpf/maps.h, and of the search for the denies to put there.
const (
	maxPendingRules    = 8
	maxPendingPrefixes = 256
	// maxChangedRules bounds how many rules of a new table may differ from
	// the table in force for the overlay to be used; beyond it every change
	// waits for the swap.
	maxChangedRules = 256
	// resyncWindow is how far ahead in the old table a rule of the new one
	// is looked for, so removed rules do not make the rest look changed.
	resyncWindow = 64
)

// pendingDenies is the content of both overlays for one table.
type pendingDenies struct {
	egress  spanTable[bpfEgressRule]
	ingress spanTable[bpfIngressRule]
}

func (p pendingDenies) entries() int { return len(p.egress.keys) + len(p.ingress.keys) }

// findPendingDenies returns the denies of next that prev lacks and that no
// earlier rule of next overrides, so each denies only connections next
// denies. ok is false when the overlay cannot hold them (too many changes,
// prefixes or covering denies); then they wait for the swap. An invalid
// rule among them is an error, reported before anything is written.
func findPendingDenies(prev *Table, next Table) (p pendingDenies, ok bool, err error) {
	if prev == nil {
		prev = &Table{}
	}
	eg, ok := changedRules(prev.Egress, next.Egress, equalEgress)
	if !ok {
		return p, false, nil
	}
	in, ok := changedRules(prev.Ingress, next.Ingress, equalIngress)
	if !ok {
		return p, false, nil
	}

	if p.egress, ok, err = pendingEgress(next.Egress, eg); !ok || err != nil {
		return p, false, err
	}
	p.ingress, ok, err = pendingIngress(next, in)
	return p, ok && err == nil, err
}

// changedRules returns the indices of next's rules that prev does not hold
// at the same place in order, or false when there are more than
// maxChangedRules. Rules removed from prev are skipped by looking up to
// resyncWindow rules ahead.
func changedRules[R any](prev, next []R, eq func(a, b *R) bool) ([]int, bool) {
	var out []int
	i := 0
	for j := range next {
		if k := findFrom(prev, i, &next[j], eq); k >= 0 {
			i = k + 1
			continue
		}
		out = append(out, j)
		if len(out) > maxChangedRules {
			return nil, false
		}
	}
	return out, true
}

func findFrom[R any](rules []R, from int, r *R, eq func(a, b *R) bool) int {
	for k := from; k < len(rules) && k < from+resyncWindow; k++ {
		if eq(&rules[k], r) {
			return k
		}
	}
	return -1
}

func equalEgress(a, b *EgressRule) bool {
	return a.RuleID == b.RuleID && a.Dest == b.Dest && a.PortMin == b.PortMin &&
		a.PortMax == b.PortMax && a.Proto == b.Proto && a.Verdict == b.Verdict &&
		a.Subject.CgroupID == b.Subject.CgroupID && equalPtr(a.Subject.UID, b.Subject.UID) &&
		equalPtr(a.Subject.Exec, b.Subject.Exec)
}

func equalPtr[T comparable](a, b *T) bool {
	return a == b || a != nil && b != nil && *a == *b
}

func equalIngress(a, b *IngressRule) bool { return *a == *b }

// pendingEgress compiles the changed egress denies that no earlier rule
// overrides into overlay entries.
func pendingEgress(rules []EgressRule, changed []int) (spanTable[bpfEgressRule], bool, error) {
	var prefixes []netip.Prefix
	var out []bpfEgressRule
	var ids []uint32
	for _, j := range changed {
		r := rules[j]
		if r.Verdict != VerdictDeny {
			continue
		}
		c, err := compileEgressRule(r)
		if err == nil {
			_, err = prefixKey(r.Dest)
		}
		if err != nil {
			return spanTable[bpfEgressRule]{}, false, fmt.Errorf("egress rule %d: %w", r.RuleID, err)
		}
		if overridden(rules, j) {
			continue
		}
		prefixes, out, ids = append(prefixes, r.Dest), append(out, c), append(ids, r.RuleID)
	}
	return overlayOf(prefixes, out, ids)
}

// pendingIngress is pendingEgress for inbound rules; a deny must also lie
// inside a port range next protects, or the table would never judge it.
func pendingIngress(next Table, changed []int) (spanTable[bpfIngressRule], bool, error) {
	var prefixes []netip.Prefix
	var out []bpfIngressRule
	var ids []uint32
	for _, j := range changed {
		r := next.Ingress[j]
		if r.Verdict != VerdictDeny {
			continue
		}
		lo, hi, err := portRange(r.PortMin, r.PortMax)
		if err == nil {
			err = checkProtoVerdict(r.Proto, r.Verdict)
		}
		if err == nil {
			_, err = prefixKey(r.Peer)
		}
		if err != nil {
			return spanTable[bpfIngressRule]{}, false, fmt.Errorf("ingress rule %d: %w", r.RuleID, err)
		}
		if !protects(next.ProtectedPorts, lo, hi, r.Proto) ||
			overriddenPeer(next.Ingress, j) {
			continue
		}
		prefixes, ids = append(prefixes, r.Peer), append(ids, r.RuleID)
		out = append(out, bpfIngressRule{RuleId: r.RuleID, PortMin: lo, PortMax: hi,
			Proto: uint8(r.Proto), Verdict: uint8(r.Verdict)})
	}
	return overlayOf(prefixes, out, ids)
}

// protects reports whether one protected range holds every port of lo-hi
// for proto.
func protects(ranges []PortRange, lo, hi uint16, proto Protocol) bool {
	for _, r := range ranges {
		rlo, rhi, err := portRange(r.Min, r.Max)
		if err != nil || lo < rlo || hi > rhi {
			continue
		}
		if r.Proto == ProtoAny || r.Proto == proto {
			return true
		}
	}
	return false
}

// rulePlace is what decides whether one rule is judged before another for
// a connection both match: prefix, ports, transport and verdict.
type rulePlace struct {
	prefix  netip.Prefix // as written; trieView gives the kernel's view
	lo, hi  uint16
	proto   Protocol
	verdict Verdict
}

func egressPlace(r *EgressRule) rulePlace {
	lo, hi, _ := portRange(r.PortMin, r.PortMax)
	return rulePlace{r.Dest, lo, hi, r.Proto, r.Verdict}
}

func ingressPlace(r *IngressRule) rulePlace {
	lo, hi, _ := portRange(r.PortMin, r.PortMax)
	return rulePlace{r.Peer, lo, hi, r.Proto, r.Verdict}
}

// trieView returns p as the kernel's trie sees it: IPv4 as IPv4-mapped IPv6.
func trieView(p netip.Prefix) netip.Prefix {
	if p.Addr().Is4() {
		return netip.PrefixFrom(netip.AddrFrom16(p.Addr().As16()), p.Bits()+96).Masked()
	}
	return p.Masked()
}

// overridden reports whether some rule that does not deny can be judged
// before rule d for a connection both match: a rule with a longer prefix
// inside d's, or one with d's prefix earlier in the table. Subjects are not
// compared, so a rule for other processes also counts. It runs over the
// whole table while a deny waits, so the verdict is checked in place first.
func overridden(rules []EgressRule, d int) bool {
	dp := egressPlace(&rules[d])
	for k := range rules {
		if rules[k].Verdict != VerdictDeny && precedes(egressPlace(&rules[k]), k, dp, d) {
			return true
		}
	}
	return false
}

// overriddenPeer is overridden for inbound rules.
func overriddenPeer(rules []IngressRule, d int) bool {
	dp := ingressPlace(&rules[d])
	for k := range rules {
		if rules[k].Verdict != VerdictDeny && precedes(ingressPlace(&rules[k]), k, dp, d) {
			return true
		}
	}
	return false
}

// precedes reports whether rule r at index k can be judged before rule d
// at index di for a connection both match.
func precedes(r rulePlace, k int, d rulePlace, di int) bool {
	if k == di || r.hi < d.lo || r.lo > d.hi {
		return false
	}
	if r.proto != ProtoAny && d.proto != ProtoAny && r.proto != d.proto {
		return false
	}
	rv, dv := trieView(r.prefix), trieView(d.prefix)
	if rv.Bits() < dv.Bits() || rv.Bits() == dv.Bits() && k > di {
		return false
	}
	return rv.Overlaps(dv)
}

// overlayOf groups denies by prefix, each prefix holding its own denies
// and those of every shorter prefix covering it, as the tables do. It
// reports false when the overlay cannot hold them.
func overlayOf[R any](prefixes []netip.Prefix, rules []R,
	ids []uint32) (spanTable[R], bool, error) {
	if len(prefixes) == 0 {
		return spanTable[R]{}, true, nil
	}
	st, err := buildSpans(prefixes, rules, ids)
	if err != nil || len(st.keys) > maxPendingPrefixes {
		return spanTable[R]{}, false, nil
	}
	for _, s := range st.spans {
		if s.Count > maxPendingRules {
			return spanTable[R]{}, false, nil
		}
	}
	return st, true, nil
}

// writePending puts p into the overlays, one element write per prefix, each
// live as soon as it is written. The caller holds d.mu.
func (d *Dataplane) writePending(p pendingDenies) error {
	if p.entries() == 0 {
		return nil
	}
	d.pending += p.entries()
	if err := d.setPendingCount(uint32(d.pending)); err != nil {
		return err
	}
	for i, key := range p.egress.keys {
		v := bpfPendingEgress{Count: p.egress.spans[i].Count}
		s := p.egress.spans[i]
		copy(v.Rules[:], p.egress.rules[s.First:s.First+s.Count])
		if err := d.objs.EgressPending.Update(&key, &v, ebpf.UpdateAny); err != nil {
			return fmt.Errorf("write egress_pending: %w", err)
		}
	}
	for i, key := range p.ingress.keys {
		v := bpfPendingIngress{Count: p.ingress.spans[i].Count}
		s := p.ingress.spans[i]
		copy(v.Rules[:], p.ingress.rules[s.First:s.First+s.Count])
		if err := d.objs.IngressPending.Update(&key, &v, ebpf.UpdateAny); err != nil {
			return fmt.Errorf("write ingress_pending: %w", err)
		}
	}
	return nil
}

// clearPending empties both overlays, whatever they hold: the programs
// stop reading them first. The caller holds d.mu.
func (d *Dataplane) clearPending() error {
	if err := d.setPendingCount(0); err != nil {
		return err
	}
	err := errors.Join(emptyTrie(d.objs.EgressPending), emptyTrie(d.objs.IngressPending))
	if err == nil {
		d.pending = 0
	}
	return err
}

// PendDenies puts into force, at once, the denies of a table that is still
// to be built and applied: the table in force with some rules removed and
// egress and ingress appended. It is for callers whose own work before
// ApplyTable (translating a large table) would hold a new deny back. A
// deny goes into the overlays only when no allow or audit rule of the
// table in force or of the appended ones, with the same or a longer
// prefix, overlaps it, whatever their order; an ingress deny must also lie
// inside a port range the table in force protects, so the caller must pass
// none when the protected ranges change. The rest wait for ApplyTable.
//
// The denies stay until the next ApplyTable ends, or ClearPending; the
// caller must make one of them follow. It returns how many denies it put
// in force; before the first ApplyTable of this Open it puts none.
func (d *Dataplane) PendDenies(egress []EgressRule, ingress []IngressRule) (int, error) {
	d.mu.Lock()
	defer d.mu.Unlock()

	if d.last == nil {
		return 0, nil
	}
	p, ok, err := d.appendedDenies(egress, ingress)
	if err != nil || !ok {
		return 0, err
	}
	if err := d.writePending(p); err != nil {
		return 0, errors.Join(err, d.clearPending())
	}
	return len(p.egress.rules) + len(p.ingress.rules), nil
}

// ClearPending empties the overlays of the denies PendDenies put there,
// when the table they came from will not be applied.
func (d *Dataplane) ClearPending() error {
	d.mu.Lock()
	defer d.mu.Unlock()

	if d.pending == 0 {
		return nil
	}
	return d.clearPending()
}

// appendedDenies selects the denies among rules to be appended to the
// table in force that no allow or audit rule can precede. The caller holds
// d.mu.
func (d *Dataplane) appendedDenies(egress []EgressRule,
	ingress []IngressRule) (pendingDenies, bool, error) {
	var p pendingDenies
	var prefixes []netip.Prefix
	var eg []bpfEgressRule
	var ids []uint32
	for _, r := range egress {
		if r.Verdict != VerdictDeny {
			continue
		}
		c, err := compileEgressRule(r)
		if err != nil {
			return p, false, fmt.Errorf("egress rule %d: %w", r.RuleID, err)
		}
		dp := egressPlace(&r)
		if overriddenBy(d.last.Egress, dp) || overriddenBy(egress, dp) {
			continue
		}
		prefixes, eg, ids = append(prefixes, r.Dest), append(eg, c), append(ids, r.RuleID)
	}
	var ok bool
	var err error
	if p.egress, ok, err = overlayOf(prefixes, eg, ids); !ok || err != nil {
		return p, false, err
	}
	p.ingress, ok, err = d.appendedPeerDenies(ingress)
	return p, ok, err
}

func (d *Dataplane) appendedPeerDenies(
	ingress []IngressRule) (spanTable[bpfIngressRule], bool, error) {
	var prefixes []netip.Prefix
	var out []bpfIngressRule
	var ids []uint32
	for _, r := range ingress {
		if r.Verdict != VerdictDeny {
			continue
		}
		lo, hi, err := portRange(r.PortMin, r.PortMax)
		if err == nil {
			err = checkProtoVerdict(r.Proto, r.Verdict)
		}
		if err != nil {
			return spanTable[bpfIngressRule]{}, false, fmt.Errorf("ingress rule %d: %w", r.RuleID, err)
		}
		dp := ingressPlace(&r)
		if !protects(d.last.ProtectedPorts, lo, hi, r.Proto) ||
			overriddenPeerBy(d.last.Ingress, dp) || overriddenPeerBy(ingress, dp) {
			continue
		}
		prefixes, ids = append(prefixes, r.Peer), append(ids, r.RuleID)
		out = append(out, bpfIngressRule{RuleId: r.RuleID, PortMin: lo, PortMax: hi,
			Proto: uint8(r.Proto), Verdict: uint8(r.Verdict)})
	}
	return overlayOf(prefixes, out, ids)
}

// overriddenBy reports whether an allow or audit rule among rules, of d's
// prefix or a longer one, overlaps d, in any order.
func overriddenBy(rules []EgressRule, d rulePlace) bool {
	for k := range rules {
		if rules[k].Verdict != VerdictDeny && precedes(egressPlace(&rules[k]), 0, d, 1) {
			return true
		}
	}
	return false
}

// overriddenPeerBy is overriddenBy for inbound rules.
func overriddenPeerBy(rules []IngressRule, d rulePlace) bool {
	for k := range rules {
		if rules[k].Verdict != VerdictDeny && precedes(ingressPlace(&rules[k]), 0, d, 1) {
			return true
		}
	}
	return false
}

// emptyTrie deletes every key of an overlay, listing them first.
func emptyTrie(m *ebpf.Map) error {
	var keys []bpfPrefixKey
	var prev any
	for {
		var k bpfPrefixKey
		err := m.NextKey(prev, &k)
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			break
		}
		if err != nil {
			return fmt.Errorf("read %s: %w", m, err)
		}
		keys = append(keys, k)
		prev = &k
	}
	for _, k := range keys {
		if err := m.Delete(&k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("delete %s: %w", m, err)
		}
	}
	return nil
}

// setPendingCount records how many overlay entries the programs should
// look for; 0 makes them skip the overlays.
func (d *Dataplane) setPendingCount(n uint32) error {
	d.cutMu.Lock()
	defer d.cutMu.Unlock()

	var info bpfScopeInfo
	if err := d.objs.Scope.Lookup(uint32(0), &info); err != nil {
		return fmt.Errorf("read scope: %w", err)
	}
	info.PendingEntries = n
	if err := d.objs.Scope.Put(uint32(0), &info); err != nil {
		return fmt.Errorf("write scope: %w", err)
	}
	return nil
}
