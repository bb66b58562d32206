package export

import (
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	vigilpb "github.com/vigilsec/vigil/gen/vigil/v1"
)

// SchemaVersion is the OCSF schema version the records follow.
const SchemaVersion = "1.3.0"

// OCSF classes and categories used by Vigil.
const (
	ClassBase             = 0
	ClassProcessActivity  = 1007
	ClassNetworkActivity  = 4001
	ClassDetectionFinding = 2004

	categoryUncategorized = 0
	categorySystem        = 1
	categoryFindings      = 2
	categoryNetwork       = 4
)

// OCSF severity ids.
const (
	SeverityUnknown       = 0
	SeverityInformational = 1
	SeverityLow           = 2
	SeverityMedium        = 3
	SeverityHigh          = 4
	SeverityCritical      = 5
)

// Record is one event in the OCSF schema, ready to encode as JSON.
type Record struct {
	ClassUID       int             `json:"class_uid"`
	ClassName      string          `json:"class_name"`
	CategoryUID    int             `json:"category_uid"`
	CategoryName   string          `json:"category_name"`
	ActivityID     int             `json:"activity_id"`
	ActivityName   string          `json:"activity_name"`
	TypeUID        int             `json:"type_uid"` // class_uid*100 + activity_id
	TypeName       string          `json:"type_name"`
	Time           int64           `json:"time"` // milliseconds since the epoch
	SeverityID     int             `json:"severity_id"`
	Severity       string          `json:"severity"`
	Message        string          `json:"message,omitempty"`
	Metadata       Metadata        `json:"metadata"`
	Device         *Device         `json:"device,omitempty"`
	Actor          *Actor          `json:"actor,omitempty"`
	Process        *Process        `json:"process,omitempty"`
	SrcEndpoint    *Endpoint       `json:"src_endpoint,omitempty"`
	DstEndpoint    *Endpoint       `json:"dst_endpoint,omitempty"`
	ConnectionInfo *ConnectionInfo `json:"connection_info,omitempty"`
	ActionID       int             `json:"action_id,omitempty"` // 1 allowed, 2 denied
	Action         string          `json:"action,omitempty"`
	DispositionID  int             `json:"disposition_id,omitempty"` // 1 allowed, 2 blocked
	Disposition    string          `json:"disposition,omitempty"`
	ExitCode       *int32          `json:"exit_code,omitempty"`
	FindingInfo    *FindingInfo    `json:"finding_info,omitempty"`
	Resources      []Resource      `json:"resources,omitempty"`
	Evidences      []Evidence      `json:"evidences,omitempty"`
	StatusID       int             `json:"status_id,omitempty"`
	Unmapped       map[string]any  `json:"unmapped,omitempty"`
}

// Metadata describes the record's origin.
type Metadata struct {
	Version  string  `json:"version"` // OCSF schema version
	Product  Product `json:"product"`
	UID      string  `json:"uid,omitempty"`      // the server's event id
	Sequence uint64  `json:"sequence,omitempty"` // the agent's sequence number
}

// Product names Vigil.
type Product struct {
	Name       string `json:"name"`
	VendorName string `json:"vendor_name"`
	Version    string `json:"version,omitempty"`
}

// Device is the agent's host.
type Device struct {
	TypeID int    `json:"type_id"`
	Type   string `json:"type"`
	Name   string `json:"name"`
	UID    string `json:"uid"`
}

// Actor is who performed the activity.
type Actor struct {
	Process *Process `json:"process,omitempty"`
	User    *User    `json:"user,omitempty"`
}

// User is a user account.
type User struct {
	UID  string `json:"uid"`
	Name string `json:"name,omitempty"`
}

// Process is an OCSF process object.
type Process struct {
	PID           uint32     `json:"pid"`
	UID           string     `json:"uid,omitempty"` // "PID@START_NS", unique on its host
	Name          string     `json:"name,omitempty"`
	CmdLine       string     `json:"cmd_line,omitempty"`
	File          *File      `json:"file,omitempty"`
	User          *User      `json:"user,omitempty"`
	ParentProcess *Process   `json:"parent_process,omitempty"`
	Container     *Container `json:"container,omitempty"`
}

// File is an executable file.
type File struct {
	Name   string        `json:"name"`
	Path   string        `json:"path,omitempty"`
	TypeID int           `json:"type_id"` // 1: regular file
	Hashes []Fingerprint `json:"hashes,omitempty"`
}

// Fingerprint is a file hash; algorithm id 3 is SHA-256.
type Fingerprint struct {
	AlgorithmID int    `json:"algorithm_id"`
	Algorithm   string `json:"algorithm"`
	Value       string `json:"value"`
}

// Container names the container a process runs in.
type Container struct {
	UID string `json:"uid"`
}

// Endpoint is one end of a connection.
type Endpoint struct {
	IP   string `json:"ip,omitempty"`
	Port uint32 `json:"port,omitempty"`
}

// ConnectionInfo describes a flow.
type ConnectionInfo struct {
	ProtocolName string `json:"protocol_name,omitempty"`
	ProtocolNum  int    `json:"protocol_num,omitempty"`
	DirectionID  int    `json:"direction_id"` // 1 inbound, 2 outbound
	Direction    string `json:"direction"`
}

// FindingInfo describes a detection.
type FindingInfo struct {
	UID      string    `json:"uid"`
	Title    string    `json:"title"`
	Desc     string    `json:"desc,omitempty"`
	Types    []string  `json:"types,omitempty"`
	Analytic *Analytic `json:"analytic,omitempty"`
}

// Analytic names the detector.
type Analytic struct {
	Name   string `json:"name"`
	TypeID int    `json:"type_id"` // 1: rule
	Type   string `json:"type"`
}

// Resource is the entity a finding is about.
type Resource struct {
	UID  string `json:"uid"`  // KIND/NAME
	Type string `json:"type"` // KIND
	Name string `json:"name"` // NAME
}

// Evidence carries the observables behind a finding.
type Evidence struct {
	Process        *Process        `json:"process,omitempty"`
	SrcEndpoint    *Endpoint       `json:"src_endpoint,omitempty"`
	DstEndpoint    *Endpoint       `json:"dst_endpoint,omitempty"`
	ConnectionInfo *ConnectionInfo `json:"connection_info,omitempty"`
}

// Mapper turns events into OCSF records. The zero value is usable; it is
// safe for concurrent use.
type Mapper struct {
	ProductVersion string           // Vigil's version, for metadata.product
	Now            func() time.Time // time for events without one; nil: time.Now
}

// Map converts an event. It never fails: fields the schema has no place for
// go under unmapped, and an unknown kind becomes a Base Event.
func (m Mapper) Map(ev *vigilpb.Event) *Record {
	rec := m.base(ev)
	switch ev.GetKind() {
	case vigilpb.EventKind_EVENT_KIND_EXEC, vigilpb.EventKind_EVENT_KIND_FORK:
		processActivity(rec, ev, 1, "Launch")
	case vigilpb.EventKind_EVENT_KIND_EXIT:
		processActivity(rec, ev, 2, "Terminate")
		code := ev.GetExitCode()
		rec.ExitCode = &code
	case vigilpb.EventKind_EVENT_KIND_CONNECT, vigilpb.EventKind_EVENT_KIND_ACCEPT:
		networkActivity(rec, ev)
	case vigilpb.EventKind_EVENT_KIND_FINDING:
		detectionFinding(rec, ev)
	default:
		baseEvent(rec, ev)
	}
	rec.TypeUID = rec.ClassUID*100 + rec.ActivityID
	rec.TypeName = rec.ClassName + ": " + rec.ActivityName
	rec.Severity = severityName(rec.SeverityID)
	return rec
}

// base fills what every record carries.
func (m Mapper) base(ev *vigilpb.Event) *Record {
	t := ev.GetTimeUnixNano()
	if t == 0 {
		now := time.Now
		if m.Now != nil {
			now = m.Now
		}
		t = now().UnixNano()
	}
	rec := &Record{
		Time:       t / int64(time.Millisecond),
		SeverityID: SeverityInformational,
		Message:    ev.GetMessage(),
		Metadata: Metadata{
			Version: SchemaVersion, UID: ev.GetServerId(), Sequence: ev.GetSeq(),
			Product: Product{Name: "Vigil", VendorName: "Vigil", Version: m.ProductVersion},
		},
		Unmapped: map[string]any{"kind": kindName(ev.GetKind())},
	}
	if a := ev.GetAgent(); a != "" {
		rec.Device = &Device{TypeID: 0, Type: "Unknown", Name: a, UID: a}
		rec.Unmapped["agent"] = a
	}
	if ev.GetEntity() != "" {
		rec.Unmapped["entity"] = ev.GetEntity()
	}
	return rec
}

// processActivity fills a Process Activity record.
func processActivity(rec *Record, ev *vigilpb.Event, activity int, name string) {
	rec.ClassUID, rec.ClassName = ClassProcessActivity, "Process Activity"
	rec.CategoryUID, rec.CategoryName = categorySystem, "System Activity"
	rec.ActivityID, rec.ActivityName = activity, name
	if ev.GetSignal() != 0 {
		rec.Unmapped["signal"] = ev.GetSignal()
	}

	p := ev.GetProcess()
	if p == nil {
		return
	}
	rec.Process = process(p)
	rec.Actor = &Actor{User: user(p), Process: rec.Process.ParentProcess}
	processExtras(rec.Unmapped, p)
}

// networkActivity fills a Network Activity record.
func networkActivity(rec *Record, ev *vigilpb.Event) {
	rec.ClassUID, rec.ClassName = ClassNetworkActivity, "Network Activity"
	rec.CategoryUID, rec.CategoryName = categoryNetwork, "Network Activity"
	c := ev.GetConnection()
	rec.ActivityID, rec.ActivityName = 1, "Open"
	rec.ActionID, rec.Action, rec.DispositionID, rec.Disposition = 1, "Allowed", 1, "Allowed"
	if c.GetVerdict() == vigilpb.Verdict_VERDICT_DENY {
		rec.ActivityID, rec.ActivityName = 5, "Refuse"
		rec.ActionID, rec.Action, rec.DispositionID, rec.Disposition = 2, "Denied", 2, "Blocked"
		rec.SeverityID = SeverityMedium
	}
	if c != nil {
		rec.SrcEndpoint, rec.DstEndpoint, rec.ConnectionInfo = flow(c)
	}
	if p := ev.GetProcess(); p != nil {
		rec.Actor = &Actor{Process: process(p), User: user(p)}
		processExtras(rec.Unmapped, p)
	}
	rec.Unmapped["verdict"] = verdictName(c.GetVerdict())
	rec.Unmapped["rule_id"] = c.GetRuleId()
}

// flow returns the endpoints and connection info of a connection.
func flow(c *vigilpb.Connection) (src, dst *Endpoint, info *ConnectionInfo) {
	local := &Endpoint{IP: c.GetLocalAddress(), Port: c.GetLocalPort()}
	remote := &Endpoint{IP: c.GetRemoteAddress(), Port: c.GetRemotePort()}
	info = &ConnectionInfo{DirectionID: 2, Direction: "Outbound"}
	switch c.GetProtocol() {
	case vigilpb.Protocol_PROTOCOL_TCP:
		info.ProtocolName, info.ProtocolNum = "tcp", 6
	case vigilpb.Protocol_PROTOCOL_UDP:
		info.ProtocolName, info.ProtocolNum = "udp", 17
	}
	if c.GetInbound() {
		info.DirectionID, info.Direction = 1, "Inbound"
		return remote, local, info
	}
	return local, remote, info
}

// detectionFinding fills a Detection Finding record.
func detectionFinding(rec *Record, ev *vigilpb.Event) {
	rec.ClassUID, rec.ClassName = ClassDetectionFinding, "Detection Finding"
	rec.CategoryUID, rec.CategoryName = categoryFindings, "Findings"
	rec.ActivityID, rec.ActivityName = 1, "Create"
	rec.StatusID = 1 // new
	f := ev.GetFinding()
	rec.SeverityID = severityID(f.GetSeverity())
	rec.FindingInfo = &FindingInfo{
		UID: findingUID(ev), Title: f.GetReason(), Desc: f.GetReason(),
		Types:    []string{f.GetDetector()},
		Analytic: &Analytic{Name: f.GetDetector(), TypeID: 1, Type: "Rule"},
	}
	if kind, name, ok := strings.Cut(f.GetEntity(), "/"); ok {
		rec.Resources = []Resource{{UID: f.GetEntity(), Type: kind, Name: name}}
	}
	if ev.GetProcess() != nil || ev.GetConnection() != nil {
		rec.Evidences = []Evidence{findingEvidence(ev)}
	}
	rec.Unmapped["finding"] = map[string]any{
		"entity": f.GetEntity(), "detector": f.GetDetector(), "source": f.GetSource(),
		"level": f.GetLevel(), "ttl_seconds": f.GetTtlSeconds(),
	}
}

// findingEvidence holds a finding's process and flow.
func findingEvidence(ev *vigilpb.Event) Evidence {
	var e Evidence
	if p := ev.GetProcess(); p != nil {
		e.Process = process(p)
	}
	if c := ev.GetConnection(); c != nil {
		e.SrcEndpoint, e.DstEndpoint, e.ConnectionInfo = flow(c)
	}
	return e
}

// findingUID names a finding: the server's id, else agent and sequence.
func findingUID(ev *vigilpb.Event) string {
	if ev.GetServerId() != "" {
		return ev.GetServerId()
	}
	return fmt.Sprintf("%s/%d/%d", ev.GetAgent(), ev.GetSeq(), ev.GetTimeUnixNano())
}

// baseEvent fills a Base Event for levels, policies, instructions and losses.
func baseEvent(rec *Record, ev *vigilpb.Event) {
	rec.ClassUID, rec.ClassName = ClassBase, "Base Event"
	rec.CategoryUID, rec.CategoryName = categoryUncategorized, "Uncategorized"
	rec.ActivityID, rec.ActivityName = 99, kindName(ev.GetKind())
	if ev.GetKind() == vigilpb.EventKind_EVENT_KIND_LOSS {
		rec.SeverityID = SeverityMedium
		rec.Unmapped["lost"] = ev.GetLost()
	}
	if p := ev.GetProcess(); p != nil {
		rec.Process = process(p)
	}
}

// process converts a process; nil stays nil.
func process(p *vigilpb.Process) *Process {
	if p == nil {
		return nil
	}
	out := &Process{
		PID: p.GetPid(), UID: fmt.Sprintf("%d@%d", p.GetPid(), p.GetStartTimeNs()),
		Name: p.GetComm(), CmdLine: strings.Join(p.GetArgs(), " "), User: user(p),
	}
	if exe := p.GetExecutable(); exe != "" || p.GetSha256() != "" {
		out.File = &File{Name: filepath.Base(exe), Path: exe, TypeID: 1}
		if out.Name == "" {
			out.Name = out.File.Name
		}
	}
	if p.GetSha256() != "" {
		out.File.Hashes = []Fingerprint{{AlgorithmID: 3, Algorithm: "SHA-256", Value: p.GetSha256()}}
	}
	if p.GetPpid() != 0 {
		out.ParentProcess = &Process{PID: p.GetPpid()}
		if pe := p.GetParentExecutable(); pe != "" {
			out.ParentProcess.File = &File{Name: filepath.Base(pe), Path: pe, TypeID: 1}
		}
	}
	if p.GetContainerId() != "" {
		out.Container = &Container{UID: p.GetContainerId()}
	}
	return out
}

// user returns a process's user.
func user(p *vigilpb.Process) *User {
	if p == nil {
		return nil
	}
	return &User{UID: strconv.FormatUint(uint64(p.GetUid()), 10), Name: p.GetUser()}
}

// processExtras records the process fields OCSF has no place for.
func processExtras(u map[string]any, p *vigilpb.Process) {
	if p == nil {
		return
	}
	u["start_time_ns"] = p.GetStartTimeNs()
	u["cgroup_id"] = p.GetCgroupId()
	u["exe_dev"] = p.GetExeDev()
	u["exe_inode"] = p.GetExeInode()
	u["gid"] = p.GetGid()
}

// kindName is the event kind in lowercase, e.g. "exec".
func kindName(k vigilpb.EventKind) string {
	return strings.ToLower(strings.TrimPrefix(k.String(), "EVENT_KIND_"))
}

// verdictName is the verdict in lowercase, e.g. "deny".
func verdictName(v vigilpb.Verdict) string {
	return strings.ToLower(strings.TrimPrefix(v.String(), "VERDICT_"))
}

// severityID maps a Vigil severity onto OCSF.
func severityID(s string) int {
	switch s {
	case "info":
		return SeverityInformational
	case "low":
		return SeverityLow
	case "medium":
		return SeverityMedium
	case "high":
		return SeverityHigh
	case "critical":
		return SeverityCritical
	}
	return SeverityUnknown
}

// severityName is the OCSF caption of a severity id.
func severityName(id int) string {
	return [...]string{"Unknown", "Informational", "Low", "Medium", "High", "Critical"}[id]
}
