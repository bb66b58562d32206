package dataplane

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"slices"

	"github.com/cilium/ebpf"
)

// Limits of one table, as sized in bpf/common.h and bpf/maps.h.
const (
	maxRulesPerPrefix   = 32
	maxProtectedRanges  = 16
	maxQuarantineExempt = 8
	maxPrefixes         = 256 * 1024
	maxRuleSlots        = 512 * 1024
)

// ApplyTable replaces the enforced table. The new table is written into the
// inactive slot's fresh maps and made live by one write of active_slot, so
// no connection is judged against a partly written table. An invalid table
// changes nothing and the error names the offending rule.
//
// The denies the new table adds are in force well before it returns: they
// go first into the pending overlays, one element write each, and leave
// them once the table is live. Until then a connection is judged by the old
// table plus some of those denies, each of which the new table also
// applies, so nothing both tables allow is refused and nothing both refuse
// passes. Only denies that differ from the previous table of this Open, and
// that no earlier allow or audit rule of the new table could precede, take
// this path; a default that turns to deny, a removed allow, and changes too
// many for the overlays wait for the swap. A table identical in its rules
// to the one in force is not swapped at all.
//
// A rule with PortMin and PortMax both 0 covers every port. A zero
// DefaultEgress allows. Cut peers of the table are blocked and their open
// sockets destroyed; peers the previous table cut and this one does not are
// restored, while peers cut by Cut stay cut until Restore. Cut, Restore and
// Kill never wait for the swap.
//
// Denies put in force by PendDenies stay until this call ends, whether the
// table goes live or is refused.
//
// BUG: a table that fails only the whole-table limits (rules per prefix,
// prefixes, rule slots) is refused after its new denies were briefly in
// force, for as long as the compile took.
func (d *Dataplane) ApplyTable(t Table) error {
	d.mu.Lock()
	defer d.mu.Unlock()

	err := d.applyWithDenies(t)
	if d.pending > 0 {
		err = errors.Join(err, d.clearPending())
	}
	return err
}

// applyWithDenies puts the table's new denies into the overlays, then
// applies it whole. The caller holds d.mu and empties the overlays.
func (d *Dataplane) applyWithDenies(t Table) error {
	pending, fast, err := findPendingDenies(d.last, t)
	if err != nil {
		return err
	}
	if fast {
		if err := d.writePending(pending); err != nil {
			return err
		}
	}
	return d.applyWhole(t)
}

// applyWhole compiles and swaps in the table unless its rules are those in
// force, then brings kill_on_exec and the table's cuts in line. The caller
// holds d.mu.
func (d *Dataplane) applyWhole(t Table) error {
	if d.last == nil || !sameRules(*d.last, t) {
		c, err := compileTable(t)
		if err != nil {
			return err
		}
		if err := d.swapTables(c.settings, c.egress, c.ingress); err != nil {
			return err
		}
		d.last = rulesOf(t)
	}
	if err := d.syncKillOnExec(t.KillOnExec); err != nil {
		return err
	}
	return d.syncTableCuts(t.Cut)
}

// rulesOf copies the parts of t the verdict tables hold.
func rulesOf(t Table) *Table {
	return &Table{
		DefaultEgress: t.DefaultEgress, Egress: slices.Clone(t.Egress),
		ProtectedPorts: slices.Clone(t.ProtectedPorts), Ingress: slices.Clone(t.Ingress),
		Quarantined: t.Quarantined, QuarantineExempt: slices.Clone(t.QuarantineExempt),
	}
}

// sameRules reports whether a and b put the same verdict tables in force.
func sameRules(a, b Table) bool {
	return a.DefaultEgress == b.DefaultEgress && a.Quarantined == b.Quarantined &&
		slices.Equal(a.QuarantineExempt, b.QuarantineExempt) &&
		slices.Equal(a.ProtectedPorts, b.ProtectedPorts) &&
		slices.Equal(a.Ingress, b.Ingress) &&
		slices.EqualFunc(a.Egress, b.Egress, func(x, y EgressRule) bool { return equalEgress(&x, &y) })
}

// compiledTable is a validated table in the kernel's layout.
type compiledTable struct {
	settings *bpfTableSettings
	egress   spanTable[bpfEgressRule]
	ingress  spanTable[bpfIngressRule]
}

func compileTable(t Table) (compiledTable, error) {
	var c compiledTable
	var err error
	if c.settings, err = compileSettings(t); err != nil {
		return c, err
	}
	if c.egress, err = compileEgress(t.Egress); err != nil {
		return c, err
	}
	c.ingress, err = compileIngress(t.Ingress)
	return c, err
}

func compileSettings(t Table) (*bpfTableSettings, error) {
	s := &bpfTableSettings{DefaultEgress: uint8(t.DefaultEgress)}
	if t.DefaultEgress > VerdictAudit {
		return nil, fmt.Errorf("table default egress: invalid verdict %d", t.DefaultEgress)
	}
	if t.Quarantined {
		s.Quarantined = 1
	}
	if len(t.QuarantineExempt) > maxQuarantineExempt {
		return nil, fmt.Errorf("table quarantine exempt: %d prefixes, at most %d: %w",
			len(t.QuarantineExempt), maxQuarantineExempt, ErrTableTooLarge)
	}
	for i, p := range t.QuarantineExempt {
		key, err := prefixKey(p)
		if err != nil {
			return nil, fmt.Errorf("table quarantine exempt %d: %w", i, err)
		}
		s.Exempt[i] = exemptNet(key)
	}
	s.ExemptCount = uint8(len(t.QuarantineExempt))
	return s, compileProtected(s, t.ProtectedPorts)
}

func compileProtected(s *bpfTableSettings, ranges []PortRange) error {
	if len(ranges) > maxProtectedRanges {
		return fmt.Errorf("table protected ports: %d ranges, at most %d: %w",
			len(ranges), maxProtectedRanges, ErrTableTooLarge)
	}
	for i, r := range ranges {
		lo, hi, err := portRange(r.Min, r.Max)
		if err == nil {
			err = checkProtoVerdict(r.Proto, r.Default)
		}
		if err != nil {
			return fmt.Errorf("table protected ports %d: %w", i, err)
		}
		s.Protected[i] = bpfPortRange{
			Min: lo, Max: hi, Proto: uint8(r.Proto), DefaultVerdict: uint8(r.Default),
		}
	}
	s.ProtectedCount = uint8(len(ranges))
	return nil
}

func portRange(lo, hi uint16) (uint16, uint16, error) {
	if lo == 0 && hi == 0 {
		return 0, 65535, nil
	}
	if lo > hi {
		return 0, 0, fmt.Errorf("port range %d-%d is empty", lo, hi)
	}
	return lo, hi, nil
}

func checkProtoVerdict(p Protocol, v Verdict) error {
	if p < ProtoAny || p > ProtoUDP {
		return fmt.Errorf("invalid protocol %d", p)
	}
	if v < VerdictAllow || v > VerdictAudit {
		return fmt.Errorf("invalid verdict %d", v)
	}
	return nil
}

// prefixKey turns a prefix into the trie key: IPv4 as IPv4-mapped IPv6.
func prefixKey(p netip.Prefix) (bpfPrefixKey, error) {
	if !p.IsValid() {
		return bpfPrefixKey{}, fmt.Errorf("invalid prefix %q", p)
	}
	p = p.Masked()
	bits := p.Bits()
	if p.Addr().Is4() {
		bits += 96
	}
	return bpfPrefixKey{Prefixlen: uint32(bits), Addr: p.Addr().As16()}, nil
}

// exemptNet turns a trie key into network and mask words, loaded the way
// the kernel loads them from the address bytes (little-endian words).
func exemptNet(k bpfPrefixKey) bpfExemptNet {
	var mask [16]byte
	for i := range mask {
		bits := int(k.Prefixlen) - 8*i
		switch {
		case bits >= 8:
			mask[i] = 0xff
		case bits > 0:
			mask[i] = byte(0xff << (8 - bits))
		}
	}
	var n bpfExemptNet
	for w := range 2 {
		m := binary.LittleEndian.Uint64(mask[8*w:])
		n.Mask[w] = m
		n.Net[w] = binary.LittleEndian.Uint64(k.Addr[8*w:]) & m
	}
	return n
}

// spanTable is a compiled prefix trie with its rules array.
type spanTable[R any] struct {
	keys  []bpfPrefixKey
	spans []bpfRuleSpan
	rules []R
}

// buildSpans groups rules by prefix and gives each prefix the span of its
// own rules followed by those of every shorter prefix covering it, in table
// order, so the longest-prefix match alone finds every candidate rule.
func buildSpans[R any](prefixes []netip.Prefix, rules []R, ids []uint32) (spanTable[R], error) {
	groups := map[bpfPrefixKey][]int{}
	var order []bpfPrefixKey
	for i, p := range prefixes {
		key, err := prefixKey(p)
		if err != nil {
			return spanTable[R]{}, fmt.Errorf("rule %d: %w", ids[i], err)
		}
		if _, ok := groups[key]; !ok {
			order = append(order, key)
		}
		groups[key] = append(groups[key], i)
	}
	if len(order) > maxPrefixes {
		return spanTable[R]{}, fmt.Errorf("%d prefixes, at most %d: %w",
			len(order), maxPrefixes, ErrTableTooLarge)
	}
	return fillSpans(groups, order, rules, ids)
}

func fillSpans[R any](groups map[bpfPrefixKey][]int, order []bpfPrefixKey, rules []R,
	ids []uint32) (spanTable[R], error) {
	lengths := distinctLengths(order)
	out := spanTable[R]{keys: order, spans: make([]bpfRuleSpan, 0, len(order))}
	for _, key := range order {
		idx := coveringRules(groups, key, lengths)
		if len(idx) > maxRulesPerPrefix {
			return out, fmt.Errorf("rule %d: %d rules apply to one prefix, at most %d: %w",
				ids[groups[key][0]], len(idx), maxRulesPerPrefix, ErrTableTooLarge)
		}
		out.spans = append(out.spans, bpfRuleSpan{First: uint32(len(out.rules)), Count: uint32(len(idx))})
		for _, i := range idx {
			out.rules = append(out.rules, rules[i])
		}
	}
	if len(out.rules) > maxRuleSlots {
		return out, fmt.Errorf("%d rule slots, at most %d: %w",
			len(out.rules), maxRuleSlots, ErrTableTooLarge)
	}
	return out, nil
}

// distinctLengths lists the prefix lengths in use, longest first.
func distinctLengths(keys []bpfPrefixKey) []uint32 {
	var ls []uint32
	for _, k := range keys {
		if !slices.Contains(ls, k.Prefixlen) {
			ls = append(ls, k.Prefixlen)
		}
	}
	slices.Sort(ls)
	slices.Reverse(ls)
	return ls
}

// coveringRules lists the rules of key, then of each shorter covering prefix.
func coveringRules(groups map[bpfPrefixKey][]int, key bpfPrefixKey, lengths []uint32) []int {
	out := slices.Clone(groups[key])
	addr := netip.AddrFrom16(key.Addr)
	for _, l := range lengths {
		if l >= key.Prefixlen {
			continue
		}
		p, _ := addr.Prefix(int(l))
		out = append(out, groups[bpfPrefixKey{Prefixlen: l, Addr: p.Addr().As16()}]...)
	}
	return out
}

func compileEgress(rules []EgressRule) (spanTable[bpfEgressRule], error) {
	prefixes := make([]netip.Prefix, len(rules))
	out := make([]bpfEgressRule, len(rules))
	ids := make([]uint32, len(rules))
	for i, r := range rules {
		c, err := compileEgressRule(r)
		if err != nil {
			return spanTable[bpfEgressRule]{}, fmt.Errorf("egress rule %d: %w", r.RuleID, err)
		}
		prefixes[i], out[i], ids[i] = r.Dest, c, r.RuleID
	}
	t, err := buildSpans(prefixes, out, ids)
	if err != nil {
		return t, fmt.Errorf("egress %w", err)
	}
	return t, nil
}

func compileEgressRule(r EgressRule) (bpfEgressRule, error) {
	lo, hi, err := portRange(r.PortMin, r.PortMax)
	if err == nil {
		err = checkProtoVerdict(r.Proto, r.Verdict)
	}
	c := bpfEgressRule{
		RuleId: r.RuleID, PortMin: lo, PortMax: hi, Proto: uint8(r.Proto), Verdict: uint8(r.Verdict),
	}
	if r.Subject.UID != nil {
		c.Match |= matchUID
		c.Uid = *r.Subject.UID
	}
	if r.Subject.Exec != nil {
		c.Match |= matchExe
		c.ExeDev, c.ExeIno = r.Subject.Exec.Dev, r.Subject.Exec.Ino
	}
	if r.Subject.CgroupID != 0 {
		c.Match |= matchCgroup
		c.CgroupId = r.Subject.CgroupID
	}
	return c, err
}

// Match flags of bpfEgressRule.Match (MATCH_* in bpf/common.h).
const (
	matchUID    = 1 << 0
	matchExe    = 1 << 1
	matchCgroup = 1 << 2
)

func compileIngress(rules []IngressRule) (spanTable[bpfIngressRule], error) {
	prefixes := make([]netip.Prefix, len(rules))
	out := make([]bpfIngressRule, len(rules))
	ids := make([]uint32, len(rules))
	for i, r := range rules {
		lo, hi, err := portRange(r.PortMin, r.PortMax)
		if err == nil {
			err = checkProtoVerdict(r.Proto, r.Verdict)
		}
		if err != nil {
			return spanTable[bpfIngressRule]{}, fmt.Errorf("ingress rule %d: %w", r.RuleID, err)
		}
		prefixes[i], ids[i] = r.Peer, r.RuleID
		out[i] = bpfIngressRule{
			RuleId: r.RuleID, PortMin: lo, PortMax: hi, Proto: uint8(r.Proto), Verdict: uint8(r.Verdict),
		}
	}
	t, err := buildSpans(prefixes, out, ids)
	if err != nil {
		return t, fmt.Errorf("ingress %w", err)
	}
	return t, nil
}

// swapTables fills fresh inner maps for the inactive slot and flips
// active_slot to it. Every update of an outer map returns only after an RCU
// grace period (the kernel waits for running programs), so rewriting the
// new slot's trie once more after the flip guarantees that no program still
// reads the old slot when the next ApplyTable overwrites it. The caller
// holds d.mu.
func (d *Dataplane) swapTables(s *bpfTableSettings, eg spanTable[bpfEgressRule],
	in spanTable[bpfIngressRule]) error {
	var active uint32
	if err := d.objs.ActiveSlot.Lookup(uint32(0), &active); err != nil {
		return fmt.Errorf("read active_slot: %w", err)
	}
	slot := 1 - active&1
	var prev bpfTableSettings
	_ = d.objs.Settings.Lookup(active&1, &prev)
	s.Generation = prev.Generation + 1

	egress := slotMaps{bpfMapEgressPrefixes, bpfMapEgressRules,
		d.objs.EgressPrefixes, d.objs.EgressRules}
	egTrie, err := fillSlot(d.spec, egress, slot, eg)
	if err != nil {
		return fmt.Errorf("write egress table: %w", err)
	}
	defer egTrie.Close()
	ingress := slotMaps{bpfMapIngressPrefixes, bpfMapIngressRules,
		d.objs.IngressPrefixes, d.objs.IngressRules}
	inTrie, err := fillSlot(d.spec, ingress, slot, in)
	if err != nil {
		return fmt.Errorf("write ingress table: %w", err)
	}
	defer inTrie.Close()
	return d.flip(slot, s, egTrie)
}

// flip makes slot live and waits until no program reads the other slot.
func (d *Dataplane) flip(slot uint32, s *bpfTableSettings, trie *ebpf.Map) error {
	if err := d.objs.Settings.Put(slot, s); err != nil {
		return fmt.Errorf("write settings: %w", err)
	}
	if err := d.objs.ActiveSlot.Put(uint32(0), slot); err != nil {
		return fmt.Errorf("write active_slot: %w", err)
	}
	if err := d.objs.EgressPrefixes.Put(slot, trie); err != nil {
		return fmt.Errorf("wait for readers of the old table: %w", err)
	}
	return nil
}

// slotMaps names one direction's outer maps: prefix tries and rule arrays.
type slotMaps struct {
	trieName, rulesName string
	trie, rules         *ebpf.Map
}

// fillSlot creates and fills one trie and its rules array and installs both
// at slot of their outer maps. It returns the trie; the caller closes it.
func fillSlot[R any](spec *ebpf.CollectionSpec, m slotMaps, slot uint32,
	t spanTable[R]) (*ebpf.Map, error) {
	trie, err := newInner(spec.Maps[m.trieName].InnerMap, len(t.keys), false)
	if err != nil {
		return nil, err
	}
	rules, err := newInner(spec.Maps[m.rulesName].InnerMap, len(t.rules), true)
	if err != nil {
		trie.Close()
		return nil, err
	}
	defer rules.Close()

	if err := fillInner(trie, rules, t); err != nil {
		trie.Close()
		return nil, err
	}
	if err := m.trie.Put(slot, trie); err != nil {
		trie.Close()
		return nil, fmt.Errorf("install prefixes: %w", err)
	}
	if err := m.rules.Put(slot, rules); err != nil {
		trie.Close()
		return nil, fmt.Errorf("install rules: %w", err)
	}
	return trie, nil
}

func fillInner[R any](trie, rules *ebpf.Map, t spanTable[R]) error {
	if err := putAll(trie, t.keys, t.spans); err != nil {
		return fmt.Errorf("fill prefixes: %w", err)
	}
	if err := putAll(rules, indices(len(t.rules)), t.rules); err != nil {
		return fmt.Errorf("fill rules: %w", err)
	}
	return nil
}

// newInner creates an inner map from a template; sized arrays take exactly
// n entries (at least one).
func newInner(tmpl *ebpf.MapSpec, n int, sized bool) (*ebpf.Map, error) {
	tmpl = tmpl.Copy()
	if sized {
		tmpl.MaxEntries = uint32(max(n, 1))
	}
	tmpl.Pinning = ebpf.PinNone
	m, err := ebpf.NewMap(tmpl)
	if err != nil {
		return nil, fmt.Errorf("create inner map: %w", err)
	}
	return m, nil
}

func indices(n int) []uint32 {
	out := make([]uint32, n)
	for i := range out {
		out[i] = uint32(i)
	}
	return out
}

// putAll writes keys and values in batches, one by one where the map type
// has no batch update.
func putAll[K, V any](m *ebpf.Map, keys []K, values []V) error {
	if len(keys) == 0 {
		return nil
	}
	_, err := m.BatchUpdate(keys, values, nil)
	if !errors.Is(err, ebpf.ErrNotSupported) {
		return err
	}
	for i := range keys {
		if err := m.Put(&keys[i], &values[i]); err != nil {
			return err
		}
	}
	return nil
}

// syncKillOnExec makes kill_on_exec hold exactly ids. The caller holds d.mu.
func (d *Dataplane) syncKillOnExec(ids []ExecIdentity) error {
	want := map[bpfExeKey]bool{}
	for _, id := range ids {
		want[bpfExeKey{Dev: id.Dev, Ino: id.Ino}] = true
	}
	var key bpfExeKey
	var stale []bpfExeKey
	it := d.objs.KillOnExec.Iterate()
	for it.Next(&key, new(uint8)) {
		if !want[key] {
			stale = append(stale, key)
		}
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("read kill_on_exec: %w", err)
	}
	for _, k := range stale {
		if err := d.objs.KillOnExec.Delete(&k); err != nil {
			return fmt.Errorf("delete kill_on_exec: %w", err)
		}
	}
	for k := range want {
		if err := d.objs.KillOnExec.Put(&k, uint8(1)); err != nil {
			return fmt.Errorf("write kill_on_exec: %w", err)
		}
	}
	return nil
}
