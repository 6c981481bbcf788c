package transport

import (
	"errors"
	"net"
)

// HalfClosed reports false: a named pipe has no half-close, so the end of
// its input is the end of the connection.
func HalfClosed(net.Conn) bool { return false }

// AwaitHangup returns an error at once: a named pipe is never half-closed.
func AwaitHangup(net.Conn) error { return errors.New("a named pipe has no half-close") }
