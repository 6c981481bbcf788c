//go:build unix

package worker

import (
	"io"
	"os"

	"github.com/isolated-workers/worker/internal/wire"
)

// watchHost calls gone when the host's end of the inherited lifeline pipe
// closes: the host exited or died, on any Unix, SIGKILL included.
func watchHost(d wire.StartupData, gone func()) {
	if d.LifeFD <= 0 {
		return
	}
	f := os.NewFile(uintptr(d.LifeFD), "lifeline")
	if f == nil {
		return
	}
	go func() {
		io.Copy(io.Discard, f)
		f.Close()
		gone()
	}()
}
