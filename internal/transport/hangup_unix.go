//go:build unix

package transport

import (
	"errors"
	"net"

	"golang.org/x/sys/unix"
)

// HalfClosed reports, for a connection whose input has ended, whether the
// peer only shut down its sending side and still reads (a Unix socket that
// the peer has not closed). It reports false when the peer closed the
// connection or died, and for any other kind of connection, which cannot
// tell: then the end of input is the end of the connection.
func HalfClosed(conn net.Conn) bool {
	uc, ok := conn.(*net.UnixConn)
	if !ok {
		return false
	}
	rc, err := uc.SyscallConn()
	if err != nil {
		return false
	}
	half := false
	if rc.Control(func(fd uintptr) { half = !hungUp(fd) }) != nil {
		return false // closed meanwhile
	}
	return half
}

// AwaitHangup blocks, reading nothing, until the peer of conn (a Unix
// socket that HalfClosed reported half-closed) closes the connection
// entirely or dies, and then returns nil; or until conn is closed or its
// read deadline passes, and then returns that error.
func AwaitHangup(conn net.Conn) error {
	uc, ok := conn.(*net.UnixConn)
	if !ok {
		return errNoHalfClose
	}
	rc, err := uc.SyscallConn()
	if err != nil {
		return err
	}
	// Each time the socket's state changes, the runtime's poller wakes
	// this reader, which then looks again.
	return rc.Read(func(fd uintptr) bool { return hungUp(fd) })
}

var errNoHalfClose = errors.New("the connection has no half-close")

// hungUp polls fd, without waiting, for POLLHUP (or POLLERR): the peer has
// closed both directions. A peer that only shut down its writing makes
// the socket readable (POLLIN, and POLLRDHUP on Linux), not hung up. Only
// POLLOUT is asked for: macOS would report the end of input as POLLHUP
// when asked for input too.
func hungUp(fd uintptr) bool {
	p := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLOUT}}
	for {
		n, err := unix.Poll(p, 0)
		if err == unix.EINTR {
			continue
		}
		return err == nil && n > 0 && p[0].Revents&(unix.POLLHUP|unix.POLLERR) != 0
	}
}
