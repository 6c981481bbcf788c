//go:build unix

package worker

import (
	"io"
	"os"
)

// watchLifeline calls gone when the host's end of the inherited lifeline
// pipe closes: the host exited or died, on any Unix, SIGKILL included.
func watchLifeline(fd int, gone func()) {
	f := os.NewFile(uintptr(fd), "lifeline")
	if f == nil {
		return
	}
	go func() {
		io.Copy(io.Discard, f)
		f.Close()
		gone()
	}()
}
