package worker

import (
	"context"
	"net"

	"github.com/isolated-workers/worker/internal/npipe"
)

// newSocketPath returns a fresh named pipe path, \\.\pipe\worker-<uuid>,
// as the TypeScript library uses. Pipes need no directory.
func newSocketPath() (path, dir string, err error) {
	path, err = npipe.NewPath()
	return path, "", err
}

// listen listens on a named pipe that only the current user may open.
func listen(path string) (net.Listener, error) { return npipe.Listen(path) }

func dial(ctx context.Context, path string) (net.Conn, error) { return npipe.Dial(ctx, path) }

// removeSocket has nothing to do: a pipe vanishes with its last handle.
func removeSocket(string) {}

// checkPeer has nothing to check: the pipe's security descriptor admits
// only the current user.
func checkPeer(net.Conn) error { return nil }
