//go:build darwin || freebsd

package worker

import (
	"fmt"
	"net"
	"os"

	"golang.org/x/sys/unix"
)

// checkPeer refuses a connection from another user: LOCAL_PEERCRED (what
// getpeereid(3) reads) tells the uid at the other end of a Unix socket.
func checkPeer(conn net.Conn) error {
	return withFD(conn, func(fd int) error {
		cred, err := unix.GetsockoptXucred(fd, unix.SOL_LOCAL, unix.LOCAL_PEERCRED)
		if err != nil {
			return fmt.Errorf("reading the peer's credentials: %w", err)
		}
		if int(cred.Uid) != os.Geteuid() {
			return fmt.Errorf("%w: the peer runs as uid %d, this worker as uid %d", ErrUnauthorized, cred.Uid, os.Geteuid())
		}
		return nil
	})
}
