//go:build unix

package transport

import (
	"errors"
	"fmt"
	"net"
	"os"
	"syscall"
)

// withFD runs f on the file descriptor of a Unix socket connection; other
// connections have no credentials to check and pass.
func withFD(conn net.Conn, f func(fd int) error) error {
	sc, ok := conn.(syscall.Conn)
	if !ok {
		return nil
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return err
	}
	var ferr error
	if err := raw.Control(func(fd uintptr) { ferr = f(int(fd)) }); err != nil {
		return errors.Join(err, ferr)
	}
	return ferr
}

// sameUser refuses a peer that runs as another user than this process.
func sameUser(uid int) error {
	if uid != os.Geteuid() {
		return fmt.Errorf("%w (uid %d, not %d)", ErrOtherUser, uid, os.Geteuid())
	}
	return nil
}
