//go:build unix

package proc

import (
	"io"
	"os"
	"syscall"
)

// LogStderr returns a writer to this process's standard error for its log
// records. Unlike os.Stderr, a write to it once the host that reads the
// other end is gone fails (EPIPE) instead of killing the process with
// SIGPIPE, which the Go runtime does for descriptors 1 and 2 only: a
// worker logs that its host died, then cleans up. It is a duplicate of
// descriptor 2 that children do not inherit, or os.Stderr if none can be
// made.
func LogStderr() io.Writer {
	syscall.ForkLock.RLock()
	fd, err := syscall.Dup(2)
	if err == nil {
		syscall.CloseOnExec(fd)
	}
	syscall.ForkLock.RUnlock()
	if err != nil {
		return os.Stderr
	}
	return os.NewFile(uintptr(fd), "stderr")
}
