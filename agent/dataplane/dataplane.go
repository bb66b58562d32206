package dataplane

import (
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
)

// Defaults of Config.
const (
	DefaultCgroupRoot      = "/sys/fs/cgroup/unified"
	DefaultPinRoot         = "/sys/fs/bpf/vigil"
	DefaultRingBufferBytes = 8 << 20
	bpffsRoot              = "/sys/fs/bpf"
)

// Errors callers branch on.
var (
	// ErrNoProcess means no live process has the given (pid, start time).
	ErrNoProcess = errors.New("no such process")
	// ErrTableTooLarge means a table exceeds what the kernel maps hold.
	ErrTableTooLarge = errors.New("table too large")
)

// Config says where a Dataplane enforces and where it pins.
type Config struct {
	CgroupPath      string // scope; "" = cgroup v2 root /sys/fs/cgroup/unified
	PinPath         string // "" = /sys/fs/bpf/vigil/<scope name>
	RingBufferBytes int    // 0 = 8 MiB, rounded up to a power of two; adopted: kept
	Logger          *slog.Logger
}

// Dataplane is the loaded data plane of one scope. Its methods are safe for
// concurrent use; none may be called after Close.
type Dataplane struct {
	cfg   Config
	log   *slog.Logger
	spec  *ebpf.CollectionSpec // read-only after Open; inner map templates
	objs  bpfObjects
	links []link.Link
	caps  Capabilities // read-only after Open
	scope *os.File     // the scope directory, kept open for the cgroup array

	mu      sync.Mutex // serializes table writes: verdict tables, overlays, kill_on_exec
	last    *Table     // the rules in force after this Open's last ApplyTable; guarded by mu
	pending int        // overlay entries written since they were last emptied; guarded by mu

	cutMu  sync.Mutex // serializes writes of cut_peers and scope, never held across a swap
	killMu sync.Mutex // serializes kills
}

// hook is one attachable program.
type hook struct {
	name   string          // capability and pin name, e.g. "cgroup/connect4"
	prog   string          // program name in the collection
	attach ebpf.AttachType // cgroup hooks only
	cgroup bool            // attached to the scope directory, else global tp_btf
}

var hooks = []hook{
	{"tp_btf/sched_process_exec", bpfProgVigilExec, 0, false},
	{"tp_btf/sched_process_fork", bpfProgVigilFork, 0, false},
	{"tp_btf/sched_process_exit", bpfProgVigilExit, 0, false},
	{"tp_btf/inet_sock_set_state", bpfProgVigilSockState, 0, false},
	{"cgroup/connect4", bpfProgVigilConnect4, ebpf.AttachCGroupInet4Connect, true},
	{"cgroup/connect6", bpfProgVigilConnect6, ebpf.AttachCGroupInet6Connect, true},
	{"cgroup/sendmsg4", bpfProgVigilSendmsg4, ebpf.AttachCGroupUDP4Sendmsg, true},
	{"cgroup/sendmsg6", bpfProgVigilSendmsg6, ebpf.AttachCGroupUDP6Sendmsg, true},
	{"cgroup_skb/ingress", bpfProgVigilIngress, ebpf.AttachCGroupInetIngress, true},
	{"cgroup_skb/egress", bpfProgVigilEgressSkb, ebpf.AttachCGroupInetEgress, true},
}

// program returns the loaded program of a hook.
func (o *bpfObjects) program(name string) *ebpf.Program {
	return map[string]*ebpf.Program{
		bpfProgVigilExec: o.VigilExec, bpfProgVigilFork: o.VigilFork,
		bpfProgVigilExit: o.VigilExit, bpfProgVigilSockState: o.VigilSockState,
		bpfProgVigilConnect4: o.VigilConnect4, bpfProgVigilConnect6: o.VigilConnect6,
		bpfProgVigilSendmsg4: o.VigilSendmsg4, bpfProgVigilSendmsg6: o.VigilSendmsg6,
		bpfProgVigilIngress: o.VigilIngress, bpfProgVigilEgressSkb: o.VigilEgressSkb,
	}[name]
}

// Open loads the data plane for cfg's scope, or adopts the one pinned at
// cfg.PinPath: pinned links stay attached throughout, so enforcement never
// lapses. The caller must Close the Dataplane.
func Open(cfg Config) (*Dataplane, error) {
	cfg = withDefaults(cfg)
	if err := ensureBPFFS(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.PinPath, 0o700); err != nil {
		return nil, fmt.Errorf("create pin path: %w", err)
	}
	d := &Dataplane{cfg: cfg, log: cfg.Logger}
	if err := d.load(); err != nil {
		d.Close()
		return nil, err
	}
	if err := d.attach(); err != nil {
		d.Close()
		return nil, err
	}
	return d, nil
}

func withDefaults(cfg Config) Config {
	if cfg.CgroupPath == "" {
		cfg.CgroupPath = DefaultCgroupRoot
	}
	if cfg.PinPath == "" {
		cfg.PinPath = PinPathFor(cfg.CgroupPath)
	}
	if cfg.RingBufferBytes <= 0 {
		cfg.RingBufferBytes = DefaultRingBufferBytes
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return cfg
}

// PinPathFor returns the default pin directory of a scope under
// /sys/fs/bpf/vigil: "root" for the cgroup v2 root, else "scope-" and the
// cgroup path below the root, path-escaped. The escaping keeps distinct
// scopes apart ("a/b" and "a_b" must never share pins, or cleaning one up
// would lift the other's enforcement).
func PinPathFor(cgroupPath string) string {
	rel, err := filepath.Rel(DefaultCgroupRoot, filepath.Clean(cgroupPath))
	if err != nil || strings.HasPrefix(rel, "..") {
		rel = strings.Trim(filepath.Clean(cgroupPath), "/")
	}
	if rel == "." || rel == "" {
		return filepath.Join(DefaultPinRoot, "root")
	}
	return filepath.Join(DefaultPinRoot, "scope-"+url.PathEscape(rel))
}

// ensureBPFFS mounts bpffs at /sys/fs/bpf when nothing is mounted there.
func ensureBPFFS() error {
	var st unix.Statfs_t
	if err := unix.Statfs(bpffsRoot, &st); err == nil && st.Type == unix.BPF_FS_MAGIC {
		return nil
	}
	if err := os.MkdirAll(bpffsRoot, 0o755); err != nil {
		return fmt.Errorf("create bpffs mount point: %w", err)
	}
	if err := unix.Mount("bpf", bpffsRoot, "bpf", 0, "mode=0700"); err != nil {
		return fmt.Errorf("mount bpffs: %w", err)
	}
	return nil
}

// load loads the collection, reusing every map pinned at the pin path.
func (d *Dataplane) load() error {
	spec, err := loadBpf()
	if err != nil {
		return fmt.Errorf("load collection spec: %w", err)
	}
	d.spec = spec
	spec.Maps[bpfMapEvents].MaxEntries = d.ringSize()

	opts := &ebpf.CollectionOptions{Maps: ebpf.MapOptions{PinPath: d.cfg.PinPath}}
	if err := spec.LoadAndAssign(&d.objs, opts); err != nil {
		return fmt.Errorf("load programs: %w", err)
	}
	return d.initScope()
}

// ringSize is the pinned ring buffer's size when adopting, else the
// configured size rounded up to a power of two of at least one page.
func (d *Dataplane) ringSize() uint32 {
	if m, err := ebpf.LoadPinnedMap(filepath.Join(d.cfg.PinPath, bpfMapEvents), nil); err == nil {
		defer m.Close()
		return m.MaxEntries()
	}
	size := uint32(os.Getpagesize())
	for size < uint32(d.cfg.RingBufferBytes) {
		size <<= 1
	}
	return size
}

// initScope opens the scope directory and records it in the scope maps.
func (d *Dataplane) initScope() error {
	f, err := os.Open(d.cfg.CgroupPath)
	if err != nil {
		return fmt.Errorf("open scope cgroup: %w", err)
	}
	d.scope = f
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return fmt.Errorf("stat scope cgroup: %w", err)
	}

	if err := d.objs.ScopeCgroup.Put(uint32(0), uint32(f.Fd())); err != nil {
		return fmt.Errorf("write scope_cgroup: %w", err)
	}
	var info bpfScopeInfo
	_ = d.objs.Scope.Lookup(uint32(0), &info)
	info.CgroupId = st.Ino
	if err := d.objs.Scope.Put(uint32(0), &info); err != nil {
		return fmt.Errorf("write scope: %w", err)
	}
	// Denies a crashed loader left pending may belong to a table that never
	// went live; the live table alone is the adopted state.
	return d.clearPending()
}

// attach adopts each pinned link or attaches and pins a new one, recording
// what loaded in the capabilities.
func (d *Dataplane) attach() error {
	d.caps = Capabilities{Hooks: map[string]bool{}}
	for _, h := range hooks {
		l, err := d.attachOne(h)
		if err != nil {
			d.log.Warn("hook unavailable", "hook", h.name, "err", err)
			d.caps.Hooks[h.name] = false
			continue
		}
		d.links = append(d.links, l)
		d.caps.Hooks[h.name] = true
	}
	d.caps.Hooks["iter/task"] = d.objs.VigilTasks != nil
	d.caps.Hooks["iter/tcp"] = d.objs.VigilCut != nil
	d.caps.Enforcement, d.caps.ExecEnforcement = enforcementOf(d.caps.Hooks)
	if !d.caps.Hooks["cgroup/connect4"] {
		return errors.New("attach cgroup/connect4: egress enforcement unavailable")
	}
	return nil
}

func (d *Dataplane) attachOne(h hook) (link.Link, error) {
	pin := filepath.Join(d.cfg.PinPath, "link_"+strings.NewReplacer("/", "_").Replace(h.name))
	if l, err := link.LoadPinnedLink(pin, nil); err == nil {
		return l, nil
	}
	l, err := d.newLink(h)
	if err != nil {
		return nil, fmt.Errorf("attach %s: %w", h.name, err)
	}
	if err := l.Pin(pin); err != nil {
		l.Close()
		return nil, fmt.Errorf("pin %s: %w", h.name, err)
	}
	return l, nil
}

func (d *Dataplane) newLink(h hook) (link.Link, error) {
	prog := d.objs.program(h.prog)
	if !h.cgroup {
		return link.AttachTracing(link.TracingOptions{Program: prog})
	}
	return link.AttachCgroup(link.CgroupOptions{
		Path: d.cfg.CgroupPath, Attach: h.attach, Program: prog,
	})
}

// enforcementOf names what the loaded hooks can enforce. Exec cannot be
// refused without BPF LSM; it is answered with kill-on-exec.
func enforcementOf(h map[string]bool) ([]string, string) {
	var out []string
	add := func(name string, ok bool) {
		if ok {
			out = append(out, name)
		}
	}
	add("egress", h["cgroup/connect4"] && h["cgroup/connect6"] &&
		h["cgroup/sendmsg4"] && h["cgroup/sendmsg6"])
	add("ingress", h["cgroup_skb/ingress"])
	add("kill", h["tp_btf/sched_process_exec"] && h["tp_btf/sched_process_fork"])
	add("kill-on-exec", h["tp_btf/sched_process_exec"])
	add("cut", h["iter/tcp"] && h["cgroup_skb/ingress"] && h["cgroup_skb/egress"])
	add("quarantine", h["cgroup_skb/ingress"] && h["cgroup_skb/egress"])
	exec := ""
	if h["tp_btf/sched_process_exec"] {
		exec = "kill-on-exec"
	}
	return out, exec
}

// Capabilities reports which hooks loaded and what they can enforce. The
// result is the caller's to modify.
func (d *Dataplane) Capabilities() Capabilities {
	c := d.caps
	c.Hooks = maps.Clone(d.caps.Hooks)
	c.Enforcement = slices.Clone(d.caps.Enforcement)
	return c
}

// Close releases the Dataplane's file descriptors. Pinned links and maps
// stay, so enforcement continues; Cleanup removes them.
func (d *Dataplane) Close() error {
	var errs []error
	for _, l := range d.links {
		errs = append(errs, l.Close())
	}
	d.links = nil
	errs = append(errs, d.objs.Close())
	if d.scope != nil {
		errs = append(errs, d.scope.Close())
		d.scope = nil
	}
	return errors.Join(errs...)
}

// Cleanup detaches and unpins everything of the scope pinned at pinPath.
// Programs stay attached only while another process holds their links open.
func Cleanup(pinPath string) error {
	if err := os.RemoveAll(pinPath); err != nil {
		return fmt.Errorf("remove pins %s: %w", pinPath, err)
	}
	return nil
}
