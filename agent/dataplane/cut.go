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
	return d.destroySockets()
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
	if added {
		_, err = d.destroySockets()
	}
	return err
}

func (d *Dataplane) reconcileCuts(want map[bpfCutKey]bool) (bool, error) {
	have := map[bpfCutKey]uint8{}
	var k bpfCutKey
	var origin uint8
	it := d.objs.CutPeers.Iterate()
	for it.Next(&k, &origin) {
		have[k] = origin
	}
	if err := it.Err(); err != nil {
		return false, fmt.Errorf("read cut_peers: %w", err)
	}
	for k, o := range have {
		if o == cutByTable && !want[k] {
			if err := d.objs.CutPeers.Delete(&k); err != nil {
				return false, fmt.Errorf("delete cut_peers: %w", err)
			}
		}
	}
	added := false
	for k := range want {
		if _, ok := have[k]; ok {
			continue
		}
		if err := d.objs.CutPeers.Put(&k, cutByTable); err != nil {
			return false, fmt.Errorf("write cut_peers: %w", err)
		}
		added = true
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
