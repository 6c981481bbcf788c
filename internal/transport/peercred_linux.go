package transport

import (
	"fmt"
	"net"

	"golang.org/x/sys/unix"
)

// CheckPeer refuses a connection from another user: SO_PEERCRED tells
// the uid of the process at the other end of a Unix socket.
func CheckPeer(conn net.Conn) error {
	return withFD(conn, func(fd int) error {
		cred, err := unix.GetsockoptUcred(fd, unix.SOL_SOCKET, unix.SO_PEERCRED)
		if err != nil {
			return fmt.Errorf("reading the peer's credentials: %w", err)
		}
		return sameUser(int(cred.Uid))
	})
}
