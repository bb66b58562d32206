package detect

import (
	"net/netip"
	"strings"
	"time"

	vigilpb "github.com/vigilsec/vigil/gen/vigil/v1"
	"github.com/vigilsec/vigil/policy"
)

var shells = map[string]bool{
	"sh": true, "bash": true, "dash": true, "zsh": true, "ksh": true, "csh": true,
	"tcsh": true, "fish": true, "ash": true, "busybox": true,
}

// Event runs the detectors over one agent event and updates the process
// table. Findings come out in a stable order.
func (s *State) Event(agent string, ev *vigilpb.Event) []Finding {
	a := s.agent(agent)
	at := time.Unix(0, ev.TimeUnixNano)
	switch ev.Kind {
	case vigilpb.EventKind_EVENT_KIND_EXEC:
		return s.exec(agent, a, ev.Process, at)
	case vigilpb.EventKind_EVENT_KIND_FORK:
		a.remember(ev.Process)
	case vigilpb.EventKind_EVENT_KIND_EXIT:
		if ev.Process != nil {
			delete(a.procs, ev.Process.Pid)
			delete(a.servers, ev.Process.Pid)
		}
	case vigilpb.EventKind_EVENT_KIND_ACCEPT:
		a.accepted(ev)
	case vigilpb.EventKind_EVENT_KIND_CONNECT:
		return s.connect(agent, a, ev, at)
	case vigilpb.EventKind_EVENT_KIND_LOSS:
		return a.loss(agent, ev.Lost, at)
	}
	return nil
}

// remember adds a process to the table, dropping an arbitrary entry when the
// table is full.
func (a *agentState) remember(p *vigilpb.Process) {
	if p == nil {
		return
	}
	if _, ok := a.procs[p.Pid]; !ok && len(a.procs) >= maxProcesses {
		for pid := range a.procs {
			delete(a.procs, pid)
			break
		}
	}
	a.procs[p.Pid] = p
	if p.User != "" {
		a.users[p.User] = p.Uid
	}
}

func (a *agentState) accepted(ev *vigilpb.Event) {
	if ev.Connection == nil || !ev.Connection.Inbound || ev.Process == nil {
		return
	}
	a.servers[ev.Process.Pid] = true
	if p, ok := a.procs[ev.Process.Pid]; ok && p.Executable != "" {
		a.serverExe[p.Executable] = true
	}
	if ev.Process.Executable != "" {
		a.serverExe[ev.Process.Executable] = true
	}
}

func (s *State) exec(agent string, a *agentState, p *vigilpb.Process, at time.Time) []Finding {
	if p == nil {
		return nil
	}
	parent := a.procs[p.Ppid]
	a.remember(p)
	var out []Finding
	out = append(out, s.hashHit(agent, p, at)...)
	if f, ok := s.writableExec(agent, p, at); ok {
		out = append(out, f)
	}
	if f, ok := s.shellFromService(agent, a, p, parent, at); ok {
		out = append(out, f)
	}
	if f, ok := s.privilegeGain(agent, p, parent, at); ok {
		out = append(out, f)
	}
	return out
}

func (s *State) hashHit(agent string, p *vigilpb.Process, at time.Time) []Finding {
	ind, ok := s.hashes[strings.ToLower(p.Sha256)]
	if p.Sha256 == "" || !ok {
		return nil
	}
	proc := finding(ProcessEntity(agent, p), agent, ThreatIntel, "critical", ind.Source, at, p,
		"executable %s (sha256 %s) matches indicator %s from %s", p.Executable, ind.SHA256, ind.ID, ind.Source)
	dev := finding(DeviceEntity(agent), agent, ThreatIntel, "high", ind.Source, at, p,
		"process %d ran %s, indicator %s from %s", p.Pid, p.Executable, ind.ID, ind.Source)
	return []Finding{proc, dev}
}

func (s *State) writableExec(agent string, p *vigilpb.Process, at time.Time) (Finding, bool) {
	for _, prefix := range s.settings.WritablePrefixes {
		if strings.HasPrefix(p.Executable, prefix) {
			return finding(ProcessEntity(agent, p), agent, ExecWritable, "high", agent, at, p,
				"executed %s from world-writable %s", p.Executable, prefix), true
		}
	}
	return Finding{}, false
}

func (s *State) shellFromService(agent string, a *agentState, p, parent *vigilpb.Process,
	at time.Time) (Finding, bool) {
	if !shells[base(p.Executable)] || parent == nil {
		return Finding{}, false
	}
	if !a.servers[parent.Pid] && !a.serverExe[parent.Executable] {
		return Finding{}, false
	}
	if policy.Covers(s.settings.ShellParentsAllowed, parent.Executable) {
		return Finding{}, false
	}
	return finding(ProcessEntity(agent, p), agent, ShellFromService, "high", agent, at, p,
		"network service %s (pid %d) spawned shell %s", parent.Executable, parent.Pid, p.Executable), true
}

func (s *State) privilegeGain(agent string, p, parent *vigilpb.Process, at time.Time) (Finding,
	bool) {
	if p.Uid != 0 || parent == nil || parent.Uid == 0 {
		return Finding{}, false
	}
	if policy.Covers(s.settings.PrivilegeParentsOK, parent.Executable) {
		return Finding{}, false
	}
	return finding(ProcessEntity(agent, p), agent, PrivilegeGain, "high", agent, at, p,
		"%s runs as uid 0 under parent %s (pid %d, uid %d)",
		p.Executable, parent.Executable, parent.Pid, parent.Uid), true
}

func (s *State) connect(agent string, a *agentState, ev *vigilpb.Event, at time.Time) []Finding {
	c := ev.Connection
	if c == nil {
		return nil
	}
	var out []Finding
	out = append(out, s.addressHit(agent, ev, at)...)
	if c.Verdict == vigilpb.Verdict_VERDICT_DENY && !c.Inbound {
		if f, ok := s.burst(agent, a, ev.Process, at); ok {
			out = append(out, f)
		}
	}
	return out
}

func (s *State) addressHit(agent string, ev *vigilpb.Event, at time.Time) []Finding {
	addr, err := netip.ParseAddr(ev.Connection.RemoteAddress)
	if err != nil {
		return nil
	}
	addr = addr.Unmap()
	for _, ind := range s.nets {
		if !ind.Prefix.Contains(addr) {
			continue
		}
		var out []Finding
		if p := ev.Process; p != nil {
			out = append(out, finding(ProcessEntity(agent, p), agent, ThreatIntel, "critical", ind.Source, at, p,
				"connection to %s matches indicator %s from %s", addr, ind.ID, ind.Source))
		}
		return append(out, finding(DeviceEntity(agent), agent, ThreatIntel, "high", ind.Source, at, ev.Process,
			"connection to %s matches indicator %s from %s", addr, ind.ID, ind.Source))
	}
	return nil
}

// burst counts refused connects in a sliding window and reports once per
// full window.
func (s *State) burst(agent string, a *agentState, p *vigilpb.Process, at time.Time) (Finding,
	bool) {
	cutoff := at.Add(-s.settings.ScanWindow)
	kept := a.refusals[:0]
	for _, t := range a.refusals {
		if t.After(cutoff) {
			kept = append(kept, t)
		}
	}
	a.refusals = append(kept, at)
	if len(a.refusals) < s.settings.ScanCount {
		return Finding{}, false
	}
	a.refusals = a.refusals[:0]
	return finding(DeviceEntity(agent), agent, ConnectBurst, "high", agent, at, p,
		"%d refused connects within %s", s.settings.ScanCount, s.settings.ScanWindow), true
}
