//go:build unix

package proc

import (
	"os"
	"sync/atomic"
	"syscall"
)

// WatchHost calls gone when the host's end of the inherited lifeline pipe
// (descriptor lifeFD, 0 if none) closes: the host exited or died, on any
// Unix, SIGKILL included. hostPID is not needed on Unix.
func WatchHost(lifeFD, hostPID int, gone func()) {
	if lifeFD <= 0 {
		return
	}
	// Non-blocking, the file is read through the runtime's poller instead
	// of a thread of its own, blocked in read for the worker's life.
	syscall.CloseOnExec(lifeFD) // not for the worker's children
	syscall.SetNonblock(lifeFD, true)
	f := os.NewFile(uintptr(lifeFD), "lifeline")
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

// HostCleansUp reports whether the host said, through the lifeline, that it
// removes the worker's socket itself.
func HostCleansUp() bool { return hostCleansUp.Load() }

// ClosingInOrder tells the worker, through the lifeline, that this host is
// closing it and removes its socket itself; closing the lifeline then is
// the quickest way to have a worker go (it needs no teardown of its
// connection first).
func (p *Process) ClosingInOrder() {
	if p.life != nil {
		p.life.Write([]byte{1})
		p.life.Close() // Stop closes it again, to no effect
	}
}
