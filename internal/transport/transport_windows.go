package transport

import (
	"context"
	"net"

	"github.com/isolated-workers/worker/internal/npipe"
)

// NewPath returns a fresh named pipe path, \\.\pipe\worker-<uuid>,
// as the TypeScript library uses. Pipes need no directory.
func NewPath() (path, dir string, err error) {
	path, err = npipe.NewPath()
	return path, "", err
}

// Listen listens on a named pipe that only the current user may open.
func Listen(path string) (net.Listener, error) { return npipe.Listen(path) }

// Dial connects to the named pipe at path.
func Dial(ctx context.Context, path string) (net.Conn, error) { return npipe.Dial(ctx, path) }

// Remove has nothing to do: a pipe vanishes with its last handle.
func Remove(string) {}

// CheckPeer has nothing to check: the pipe's security descriptor admits
// only the current user.
func CheckPeer(net.Conn) error { return nil }
