//go:build unix

package worker

import (
	"os"
	"sync/atomic"
	"syscall"

	"github.com/isolated-workers/worker/internal/wire"
)

// watchHost calls gone when the host's end of the inherited lifeline pipe
// closes: the host exited or died, on any Unix, SIGKILL included.
func watchHost(d wire.StartupData, gone func()) {
	if d.LifeFD <= 0 {
		return
	}
	// Non-blocking, the file is read through the runtime's poller instead
	// of a thread of its own, blocked in read for the worker's life.
	syscall.SetNonblock(d.LifeFD, true)
	f := os.NewFile(uintptr(d.LifeFD), "lifeline")
	if f == nil {
		return
	}
	go func() {
		var b [16]byte
		for {
			n, err := f.Read(b[:])
			if n > 0 {
				hostCleansUp.Store(true)
			}
			if err != nil {
				break
			}
		}
		f.Close()
		gone()
	}()
}

// hostCleansUp is set when the host wrote on the lifeline before closing
// it: a host that closes its worker in order does, and then removes the
// socket itself (while the worker exits), which the worker need not do.
var hostCleansUp atomic.Bool

// closingInOrder tells the worker, through the lifeline, that this host is
// closing it and removes its socket itself; closing the lifeline then is
// the quickest way to have a worker go (it needs no teardown of its
// connection first).
func (p *process) closingInOrder() {
	if p.life != nil {
		p.life.Write([]byte{1})
		p.life.Close() // stop closes it again, to no effect
	}
}
