//go:build darwin || freebsd

package transport

import (
	"fmt"
	"net"

	"golang.org/x/sys/unix"
)

// CheckPeer refuses a connection from another user: LOCAL_PEERCRED (what
// getpeereid(3) reads) tells the uid at the other end of a Unix socket.
func CheckPeer(conn net.Conn) error {
	return withFD(conn, func(fd int) error {
		cred, err := unix.GetsockoptXucred(fd, unix.SOL_LOCAL, unix.LOCAL_PEERCRED)
		if err != nil {
			return fmt.Errorf("reading the peer's credentials: %w", err)
		}
		return sameUser(int(cred.Uid))
	})
}
