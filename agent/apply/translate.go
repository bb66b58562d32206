package apply

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/vigilsec/vigil/agent/dataplane"
	vigilpb "github.com/vigilsec/vigil/gen/vigil/v1"
	"google.golang.org/protobuf/proto"
)

// translator turns a protocol table into the kernel's table. It resolves
// executable hashes and paths to (device, inode) identities and cgroup paths
// to cgroup ids; an entry whose subject resolves to nothing matches no
// process today and is left out of the kernel table.
type translator struct {
	res   Resolver
	scope string

	used map[dataplane.ExecIdentity]bool // identities the kernel table names
}

func (tr *translator) table(t *vigilpb.VerdictTable) (dataplane.Table, error) {
	var kt dataplane.Table
	var err error
	tr.used = make(map[dataplane.ExecIdentity]bool)

	if kt.DefaultEgress, err = verdict(t.DefaultEgress); err != nil {
		return kt, fmt.Errorf("default_egress: %w", err)
	}
	for i, e := range t.Egress {
		rules, err := tr.egress(e)
		if err != nil {
			return kt, fmt.Errorf("egress[%d] (rule %d): %w", i, e.RuleId, err)
		}
		kt.Egress = append(kt.Egress, rules...)
	}
	if kt.ProtectedPorts, err = protectedPorts(t.ProtectedPorts); err != nil {
		return kt, err
	}
	if kt.Ingress, err = ingress(t.Ingress); err != nil {
		return kt, err
	}

	kt.KillOnExec = tr.killOnExec(t.KillOnExec)
	kt.Quarantined = t.Quarantined
	if kt.Cut, err = peers(t.CutPeers); err != nil {
		return kt, err
	}
	return kt, nil
}

// egress expands one entry into a kernel rule per resolved subject identity.
func (tr *translator) egress(e *vigilpb.EgressEntry) ([]dataplane.EgressRule, error) {
	dest, err := netip.ParsePrefix(e.Destination)
	if err != nil {
		return nil, fmt.Errorf("destination: %w", err)
	}
	base := dataplane.EgressRule{RuleID: e.RuleId, Dest: dest.Masked()}
	if base.PortMin, base.PortMax, err = ports(e.PortMin, e.PortMax); err != nil {
		return nil, err
	}
	if base.Proto, err = protocol(e.Protocol); err != nil {
		return nil, err
	}
	if base.Verdict, err = verdict(e.Verdict); err != nil {
		return nil, err
	}

	subjects, err := tr.subjects(e.Subject)
	if err != nil {
		return nil, err
	}
	rules := make([]dataplane.EgressRule, 0, len(subjects))
	for _, s := range subjects {
		r := base
		r.Subject = s
		rules = append(rules, r)
	}
	return rules, nil
}

// subjects resolves a protocol subject to kernel subjects: one per
// executable identity when it names an executable, none when what it names
// does not exist.
func (tr *translator) subjects(s *vigilpb.Subject) ([]dataplane.Subject, error) {
	var base dataplane.Subject
	if s == nil {
		return []dataplane.Subject{base}, nil
	}
	if s.Uid != nil {
		uid := *s.Uid
		base.UID = &uid
	}
	if s.CgroupPath != "" {
		id, ok, err := tr.cgroupID(s.CgroupPath)
		if err != nil || !ok {
			return nil, err
		}
		base.CgroupID = id
	}
	if s.ExecutableSha256 == "" && s.ExecutablePath == "" {
		return []dataplane.Subject{base}, nil
	}

	var out []dataplane.Subject
	for _, id := range tr.executables(s) {
		sub := base
		sub.Exec = &id
		out = append(out, sub)
		tr.used[id] = true
	}
	return out, nil
}

// executables resolves a subject's hash and path; when both are set, only
// identities that satisfy both remain.
func (tr *translator) executables(s *vigilpb.Subject) []dataplane.ExecIdentity {
	var byHash, byPath []dataplane.ExecIdentity
	if s.ExecutableSha256 != "" {
		byHash = tr.res.Identities(strings.ToLower(s.ExecutableSha256))
	}
	if s.ExecutablePath != "" {
		sha, id, err := tr.res.HashFile(s.ExecutablePath)
		if err == nil && (s.ExecutableSha256 == "" || strings.EqualFold(sha, s.ExecutableSha256)) {
			byPath = []dataplane.ExecIdentity{id}
		}
		return byPath
	}
	return byHash
}

// cgroupID resolves a cgroup path relative to the scope. A cgroup that does
// not exist resolves to nothing; a path leaving the scope is an error.
func (tr *translator) cgroupID(rel string) (uint64, bool, error) {
	clean := filepath.Clean("/" + rel)
	if strings.Contains(rel, "..") {
		return 0, false, fmt.Errorf("cgroup_path %q leaves the scope", rel)
	}
	var st syscall.Stat_t
	err := syscall.Stat(filepath.Join(tr.scope, clean), &st)
	if os.IsNotExist(err) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, fmt.Errorf("stat cgroup_path %q: %w", rel, err)
	}
	return st.Ino, true, nil
}

func (tr *translator) killOnExec(hashes []string) []dataplane.ExecIdentity {
	var ids []dataplane.ExecIdentity
	for _, h := range hashes {
		for _, id := range tr.res.Identities(strings.ToLower(h)) {
			if !contains(ids, id) {
				ids = append(ids, id)
			}
			tr.used[id] = true
		}
	}
	return ids
}

func contains(ids []dataplane.ExecIdentity, id dataplane.ExecIdentity) bool {
	for _, x := range ids {
		if x == id {
			return true
		}
	}
	return false
}

func protectedPorts(pps []*vigilpb.ProtectedPort) ([]dataplane.PortRange, error) {
	var out []dataplane.PortRange
	for i, p := range pps {
		var r dataplane.PortRange
		var err error
		if r.Min, r.Max, err = ports(p.PortMin, p.PortMax); err == nil {
			if r.Proto, err = protocol(p.Protocol); err == nil {
				r.Default, err = verdict(p.DefaultVerdict)
			}
		}
		if err != nil {
			return nil, fmt.Errorf("protected_ports[%d]: %w", i, err)
		}
		out = append(out, r)
	}
	return out, nil
}

func ingress(entries []*vigilpb.IngressEntry) ([]dataplane.IngressRule, error) {
	var out []dataplane.IngressRule
	for i, e := range entries {
		r := dataplane.IngressRule{RuleID: e.RuleId}
		peer, err := netip.ParsePrefix(e.Peer)
		if err == nil {
			r.Peer = peer.Masked()
			if r.PortMin, r.PortMax, err = ports(e.PortMin, e.PortMax); err == nil {
				if r.Proto, err = protocol(e.Protocol); err == nil {
					r.Verdict, err = verdict(e.Verdict)
				}
			}
		}
		if err != nil {
			return nil, fmt.Errorf("ingress[%d] (rule %d): %w", i, e.RuleId, err)
		}
		out = append(out, r)
	}
	return out, nil
}

func peers(specs []string) ([]dataplane.Peer, error) {
	var out []dataplane.Peer
	for i, s := range specs {
		p, err := ParsePeer(s)
		if err != nil {
			return nil, fmt.Errorf("cut_peers[%d]: %w", i, err)
		}
		out = append(out, p)
	}
	return out, nil
}

// ParsePeer parses "IP", "IP:PORT" or "[IPv6]:PORT".
func ParsePeer(s string) (dataplane.Peer, error) {
	if addr, err := netip.ParseAddr(s); err == nil {
		return dataplane.Peer{Addr: addr.Unmap()}, nil
	}
	ap, err := netip.ParseAddrPort(s)
	if err != nil {
		return dataplane.Peer{}, fmt.Errorf("peer %q is neither IP nor IP:PORT", s)
	}
	return dataplane.Peer{Addr: ap.Addr().Unmap(), Port: ap.Port()}, nil
}

func ports(lo, hi uint32) (uint16, uint16, error) {
	if hi > 65535 || lo > hi {
		return 0, 0, fmt.Errorf("port range %d-%d is invalid", lo, hi)
	}
	return uint16(lo), uint16(hi), nil
}

func verdict(v vigilpb.Verdict) (dataplane.Verdict, error) {
	switch v {
	case vigilpb.Verdict_VERDICT_ALLOW, vigilpb.Verdict_VERDICT_DENY, vigilpb.Verdict_VERDICT_AUDIT:
		return dataplane.Verdict(v), nil
	}
	return 0, fmt.Errorf("verdict %s is invalid", v)
}

func protocol(p vigilpb.Protocol) (dataplane.Protocol, error) {
	switch p {
	case vigilpb.Protocol_PROTOCOL_ANY, vigilpb.Protocol_PROTOCOL_TCP, vigilpb.Protocol_PROTOCOL_UDP:
		return dataplane.Protocol(p), nil
	}
	return 0, fmt.Errorf("protocol %s is invalid", p)
}

// applyDiff returns base changed by d. Removed entries are matched by every
// field; the first equal entry goes.
func applyDiff(base *vigilpb.VerdictTable, d *vigilpb.TableDiff) *vigilpb.VerdictTable {
	t := proto.Clone(base).(*vigilpb.VerdictTable)
	t.Version, t.PolicyVersion = d.Version, d.PolicyVersion

	t.Egress = append(removeEntries(t.Egress, d.EgressRemoved), d.EgressAdded...)
	t.Ingress = append(removeEntries(t.Ingress, d.IngressRemoved), d.IngressAdded...)
	if d.SetProtectedPorts {
		t.ProtectedPorts = d.ProtectedPorts
	}
	t.KillOnExec = addStrings(removeStrings(t.KillOnExec, d.KillOnExecRemoved), d.KillOnExecAdded)
	t.CutPeers = addStrings(removeStrings(t.CutPeers, d.CutPeersRemoved), d.CutPeersAdded)

	if d.DefaultEgress != vigilpb.Verdict_VERDICT_UNSPECIFIED {
		t.DefaultEgress = d.DefaultEgress
	}
	t.Quarantined, t.FailMode = d.Quarantined, d.FailMode
	return t
}

func removeEntries[M proto.Message](entries, gone []M) []M {
	out := append([]M(nil), entries...)
	for _, g := range gone {
		for i, e := range out {
			if proto.Equal(e, g) {
				out = append(out[:i], out[i+1:]...)
				break
			}
		}
	}
	return out
}

func removeStrings(list, gone []string) []string {
	var out []string
	for _, s := range list {
		if !hasString(gone, s) {
			out = append(out, s)
		}
	}
	return out
}

func addStrings(list, more []string) []string {
	for _, s := range more {
		if !hasString(list, s) {
			list = append(list, s)
		}
	}
	return list
}

func hasString(list []string, s string) bool {
	for _, x := range list {
		if strings.EqualFold(x, s) {
			return true
		}
	}
	return false
}

// failModeTable adjusts a kernel table for the time the server is
// unreachable: closed denies every egress but TCP to the server's address
// and port, open turns every deny into audit, last-known leaves it as it is.
func failModeTable(kt dataplane.Table, mode vigilpb.FailMode, server []netip.Prefix,
	port uint16) dataplane.Table {
	switch mode {
	case vigilpb.FailMode_FAIL_MODE_CLOSED:
		kt.DefaultEgress = dataplane.VerdictDeny
		kt.Egress = nil
		for _, p := range server {
			kt.Egress = append(kt.Egress, dataplane.EgressRule{
				Dest: p, PortMin: port, PortMax: port, Proto: dataplane.ProtoTCP,
				Verdict: dataplane.VerdictAllow,
			})
		}
	case vigilpb.FailMode_FAIL_MODE_OPEN:
		kt.DefaultEgress = audit(kt.DefaultEgress)
		kt.Egress = append([]dataplane.EgressRule(nil), kt.Egress...)
		for i := range kt.Egress {
			kt.Egress[i].Verdict = audit(kt.Egress[i].Verdict)
		}
		kt.Ingress = append([]dataplane.IngressRule(nil), kt.Ingress...)
		for i := range kt.Ingress {
			kt.Ingress[i].Verdict = audit(kt.Ingress[i].Verdict)
		}
		kt.ProtectedPorts = append([]dataplane.PortRange(nil), kt.ProtectedPorts...)
		for i := range kt.ProtectedPorts {
			kt.ProtectedPorts[i].Default = audit(kt.ProtectedPorts[i].Default)
		}
	}
	return kt
}

func audit(v dataplane.Verdict) dataplane.Verdict {
	if v == dataplane.VerdictDeny {
		return dataplane.VerdictAudit
	}
	return v
}

// peerString formats a peer as the protocol writes it.
func peerString(p dataplane.Peer) string {
	if p.Port == 0 {
		return p.Addr.String()
	}
	return netip.AddrPortFrom(p.Addr, p.Port).String()
}
