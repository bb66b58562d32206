package dataplane

import (
	"errors"
	"fmt"
	"io"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
)

// Origins of a cut_peers entry (CUT_BY_* in bpf/common.h).
const (
	cutByCall  uint8 = 1
	cutByTable uint8 = 2
)

// Cut blocks all traffic of sockets in scope with peer p (every port of
// p.Addr when p.Port is 0) and destroys the open TCP sockets to or from it;
// their owners see ECONNABORTED and the peer a reset. The flow stays
// blocked until Restore. It returns how many sockets were destroyed.
//
// Connections the kernel saw established in scope are reset first, each
// by its exact addresses; a walk of every TCP socket then catches the rest
// (sockets older than the data plane, or beyond what it tracks), so Cut
// returns later than the first resets reach the peer. Cut never waits for
// ApplyTable.
func (d *Dataplane) Cut(p Peer) (int, error) {
	key, err := cutKey(p)
	if err != nil {
		return 0, err
	}
	d.cutMu.Lock()
	defer d.cutMu.Unlock()

	if err := d.objs.CutPeers.Put(&key, cutByCall); err != nil {
		return 0, fmt.Errorf("write cut_peers: %w", err)
	}
	if err := d.recountCuts(); err != nil {
		return 0, err
	}
	return d.resetPeers([]bpfCutKey{key})
}

// Restore lifts a cut of p, whichever way it was made.
func (d *Dataplane) Restore(p Peer) error {
	key, err := cutKey(p)
	if err != nil {
		return err
	}
	d.cutMu.Lock()
	defer d.cutMu.Unlock()

	err = d.objs.CutPeers.Delete(&key)
	if err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("delete cut_peers: %w", err)
	}
	return d.recountCuts()
}

func cutKey(p Peer) (bpfCutKey, error) {
	if !p.Addr.IsValid() {
		return bpfCutKey{}, fmt.Errorf("cut peer: invalid address %q", p.Addr)
	}
	return bpfCutKey{Addr: p.Addr.Unmap().As16(), Port: p.Port}, nil
}

// syncTableCuts makes the table's cut entries exactly peers, keeping those
// made by Cut, and destroys the sockets of new ones.
func (d *Dataplane) syncTableCuts(peers []Peer) error {
	want := map[bpfCutKey]bool{}
	for _, p := range peers {
		k, err := cutKey(p)
		if err != nil {
			return err
		}
		want[k] = true
	}
	d.cutMu.Lock()
	defer d.cutMu.Unlock()

	added, err := d.reconcileCuts(want)
	if err != nil {
		return err
	}
	if err := d.recountCuts(); err != nil {
		return err
	}
	if len(added) > 0 {
		_, err = d.resetPeers(added)
	}
	return err
}

// resetPeers destroys the open TCP sockets in scope with the cut peers
// keys: the tracked connections by netlink, then the rest by the iter/tcp
// walk. It returns how many sockets it destroyed. The caller holds
// d.cutMu.
func (d *Dataplane) resetPeers(keys []bpfCutKey) (int, error) {
	var conns []trackedConn
	for _, k := range keys {
		c, err := d.trackedConns(k)
		if err != nil {
			return 0, err
		}
		conns = append(conns, c...)
	}
	n, err := resetConns(conns)
	if err != nil {
		return n, err
	}
	walked, err := d.destroySockets()
	return n + walked, err
}

// reconcileCuts writes want's new entries and deletes the table's stale
// ones; it returns the entries it added.
func (d *Dataplane) reconcileCuts(want map[bpfCutKey]bool) ([]bpfCutKey, error) {
	have := map[bpfCutKey]uint8{}
	var k bpfCutKey
	var origin uint8
	it := d.objs.CutPeers.Iterate()
	for it.Next(&k, &origin) {
		have[k] = origin
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("read cut_peers: %w", err)
	}
	for k, o := range have {
		if o == cutByTable && !want[k] {
			if err := d.objs.CutPeers.Delete(&k); err != nil {
				return nil, fmt.Errorf("delete cut_peers: %w", err)
			}
		}
	}
	var added []bpfCutKey
	for k := range want {
		if _, ok := have[k]; ok {
			continue
		}
		if err := d.objs.CutPeers.Put(&k, cutByTable); err != nil {
			return nil, fmt.Errorf("write cut_peers: %w", err)
		}
		added = append(added, k)
	}
	return added, nil
}

// recountCuts stores the number of cut entries, which lets the hooks skip
// the cut lookups while there are none. The caller holds d.cutMu.
func (d *Dataplane) recountCuts() error {
	n := uint32(0)
	var k bpfCutKey
	var origin uint8
	it := d.objs.CutPeers.Iterate()
	for it.Next(&k, &origin) {
		n++
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("read cut_peers: %w", err)
	}
	var info bpfScopeInfo
	if err := d.objs.Scope.Lookup(uint32(0), &info); err != nil {
		return fmt.Errorf("read scope: %w", err)
	}
	info.CutEntries = n
	if err := d.objs.Scope.Put(uint32(0), &info); err != nil {
		return fmt.Errorf("write scope: %w", err)
	}
	return nil
}

// destroySockets runs the iter/tcp program once; it writes one byte per
// socket it destroyed.
func (d *Dataplane) destroySockets() (int, error) {
	out, err := runIter(d.objs.VigilCut)
	if err != nil {
		return 0, fmt.Errorf("run iter/tcp: %w", err)
	}
	return len(out), nil
}

// runIter attaches an iterator program, reads its whole output and detaches.
func runIter(prog *ebpf.Program) ([]byte, error) {
	it, err := link.AttachIter(link.IterOptions{Program: prog})
	if err != nil {
		return nil, err
	}
	defer it.Close()
	rd, err := it.Open()
	if err != nil {
		return nil, err
	}
	defer rd.Close()
	return io.ReadAll(rd)
}
