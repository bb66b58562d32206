package dataplane

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"

	"golang.org/x/sys/unix"
)

// Sizes and flags of a netlink SOCK_DESTROY request: a netlink header and
// a struct inet_diag_req_v2 (linux/inet_diag.h).
const (
	nlmsgHeaderLen   = 16
	inetDiagReqV2Len = 56
)

// trackedConn is one connection of scope_conns.
type trackedConn struct {
	cookie uint64 // the socket's cookie, checked by the kernel on destroy
	key    bpfConnKey
}

// trackedConns lists the connections of scope_conns whose remote end is
// matched by cut key k (every port when k.Port is 0).
func (d *Dataplane) trackedConns(k bpfCutKey) ([]trackedConn, error) {
	var out []trackedConn
	var c trackedConn
	it := d.objs.ScopeConns.Iterate()
	for it.Next(&c.cookie, &c.key) {
		if c.key.Remote == k.Addr && (k.Port == 0 || c.key.RemotePort == k.Port) {
			out = append(out, c)
		}
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("read scope_conns: %w", err)
	}
	return out, nil
}

// resetConns destroys each connection by netlink SOCK_DESTROY, which
// finds the socket by its exact addresses without walking every socket;
// the owner sees ECONNABORTED and the peer a reset. It returns how many it
// destroyed; a connection that closed meanwhile is not an error.
func resetConns(conns []trackedConn) (int, error) {
	if len(conns) == 0 {
		return 0, nil
	}
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.NETLINK_SOCK_DIAG)
	if err != nil {
		return 0, fmt.Errorf("open sock_diag: %w", err)
	}
	defer unix.Close(fd)

	n := 0
	for i, c := range conns {
		err := destroyConn(fd, uint32(i+1), c)
		if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ESTALE) {
			continue // closed, or its addresses reused by another socket
		}
		if err != nil {
			return n, fmt.Errorf("destroy connection to %v: %w", remoteOf(c.key), err)
		}
		n++
	}
	return n, nil
}

func remoteOf(c bpfConnKey) netip.AddrPort {
	return netip.AddrPortFrom(netip.AddrFrom16(c.Remote).Unmap(), c.RemotePort)
}

// destroyConn sends one SOCK_DESTROY request and reads its acknowledgement.
func destroyConn(fd int, seq uint32, c trackedConn) error {
	kernel := &unix.SockaddrNetlink{Family: unix.AF_NETLINK}
	if err := unix.Sendto(fd, destroyRequest(seq, c), 0, kernel); err != nil {
		return err
	}
	buf := make([]byte, 4096)
	n, _, err := unix.Recvfrom(fd, buf, 0)
	if err != nil {
		return err
	}
	return ackError(buf[:n])
}

// ackError decodes a netlink acknowledgement: a header of type NLMSG_ERROR
// followed by the negated errno, 0 for success.
func ackError(b []byte) error {
	ne := binary.NativeEndian
	if len(b) < nlmsgHeaderLen+4 || ne.Uint16(b[4:]) != unix.NLMSG_ERROR {
		return errors.New("sock_diag: no acknowledgement")
	}
	if code := int32(ne.Uint32(b[nlmsgHeaderLen:])); code != 0 {
		return unix.Errno(-code)
	}
	return nil
}

// destroyRequest encodes a SOCK_DESTROY request for c: source is the
// socket's local end, destination its remote end, ports in network order,
// and the cookie, so only that very socket is destroyed.
func destroyRequest(seq uint32, tc trackedConn) []byte {
	c := tc.key
	b := make([]byte, nlmsgHeaderLen+inetDiagReqV2Len)
	ne := binary.NativeEndian
	ne.PutUint32(b[0:], uint32(len(b)))
	ne.PutUint16(b[4:], unix.SOCK_DESTROY)
	ne.PutUint16(b[6:], unix.NLM_F_REQUEST|unix.NLM_F_ACK)
	ne.PutUint32(b[8:], seq)

	r := b[nlmsgHeaderLen:]
	r[0], r[1] = byte(c.Family), unix.IPPROTO_TCP
	ne.PutUint32(r[4:], ^uint32(0)) // every state
	binary.BigEndian.PutUint16(r[8:], c.LocalPort)
	binary.BigEndian.PutUint16(r[10:], c.RemotePort)
	if c.Family == unix.AF_INET {
		copy(r[12:], c.Local[12:])
		copy(r[28:], c.Remote[12:])
	} else {
		copy(r[12:], c.Local[:])
		copy(r[28:], c.Remote[:])
	}
	ne.PutUint32(r[48:], uint32(tc.cookie))
	ne.PutUint32(r[52:], uint32(tc.cookie>>32))
	return b
}
