//go:build unix

package transport

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
)

// maxSocketPath is the smallest sun_path limit of the supported systems
// (104 bytes on macOS and the BSDs, including the terminating NUL).
const maxSocketPath = 103

// NewPath makes a directory that only the current user can enter
// and returns a socket path inside it, short enough for sun_path.
func NewPath() (path, dir string, err error) {
	for _, base := range []string{tempDir(), "/tmp"} {
		dir, err = os.MkdirTemp(base, "iw-")
		if err != nil {
			continue
		}
		path = filepath.Join(dir, "w.sock")
		if len(path) <= maxSocketPath {
			return path, dir, os.Chmod(dir, 0o700)
		}
		os.Remove(dir)
		err = fmt.Errorf("socket path %q is longer than %d bytes", path, maxSocketPath)
	}
	return "", "", err
}

// tempDir follows the TypeScript library: TMPDIR, else TMP, else /tmp.
func tempDir() string {
	for _, v := range []string{"TMPDIR", "TMP"} {
		if d := os.Getenv(v); d != "" {
			return d
		}
	}
	return "/tmp"
}

// Listen listens on a Unix socket at path, first removing a stale socket
// left there by a dead worker (but never another kind of file). The socket
// is made 0600, and removed when the listener closes.
func Listen(path string) (net.Listener, error) {
	if fi, err := os.Lstat(path); err == nil && fi.Mode()&os.ModeSocket != 0 {
		os.Remove(path)
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, err
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, err
	}
	return ln, nil
}

// Dial connects to the socket at path.
func Dial(ctx context.Context, path string) (net.Conn, error) {
	var d net.Dialer
	return d.DialContext(ctx, "unix", path)
}

// Remove removes a socket file that a dead worker left behind.
func Remove(path string) {
	if fi, err := os.Lstat(path); err == nil && fi.Mode()&os.ModeSocket != 0 {
		os.Remove(path)
	}
}
