//go:build unix

package proc

import (
	"os"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// The bytes a host writes on the lifeline before closing it, to say that it
// lives and is stopping the worker. A lifeline that closes without one
// means that the host died.
const (
	lifeClosing  = 1 // closing in order: the host removes the socket itself
	lifeStopping = 2 // stopping: the worker removes its socket itself
)

// WatchHost calls gone when the host's end of the inherited lifeline pipe
// (descriptor lifeFD, 0 if none) closes: the host stopped the worker (see
// HostStops), or exited or died, on any Unix, SIGKILL included: the end of
// file comes only once no process holds the host's end, that is, once
// the host is gone. hostPID is not needed on Unix.
func WatchHost(lifeFD, hostPID int, gone func()) {
	if lifeFD <= 0 {
		return
	}
	// Non-blocking, the file is read through the runtime's poller instead
	// of a thread of its own, blocked in read for the worker's life.
	syscall.CloseOnExec(lifeFD) // not for the worker's children
	syscall.SetNonblock(lifeFD, true)
	if fd, err := unix.FcntlInt(uintptr(lifeFD), unix.F_DUPFD_CLOEXEC, 0); err == nil {
		lifelinePoll.Store(int64(fd)) // for HostSpoke: lifeFD is closed after the end of file
	}
	f := os.NewFile(uintptr(lifeFD), "lifeline")
	if f == nil {
		return
	}
	go func() {
		var b [16]byte
		for {
			n, err := f.Read(b[:])
			for _, c := range b[:n] {
				hostStops.Store(true)
				if c == lifeClosing {
					hostCleansUp.Store(true)
				}
			}
			if err != nil {
				break
			}
		}
		f.Close()
		gone()
	}()
}

var (
	// hostStops is set when the host wrote on the lifeline: it lives, and
	// is stopping the worker.
	hostStops atomic.Bool
	// hostCleansUp is set when the host said on the lifeline that it
	// closes its worker in order, and then removes the socket itself
	// (while the worker exits), which the worker need not do.
	hostCleansUp atomic.Bool
	// lifelinePoll is a duplicate of the lifeline's descriptor (-1: none),
	// kept open for the worker's life.
	lifelinePoll atomic.Int64
)

func init() { lifelinePoll.Store(-1) }

// HostStops reports whether the host said, through the lifeline, that it
// lives and is stopping this worker: once the lifeline has closed, false
// means that the host died.
func HostStops() bool { return hostStops.Load() }

// HostCleansUp reports whether the host said, through the lifeline, that it
// removes the worker's socket itself.
func HostCleansUp() bool { return hostCleansUp.Load() }

// HostSpoke waits up to d for the host to write on the lifeline or close
// it, without reading it, and reports whether it did: then WatchHost's gone
// follows, if it has not come yet. It reports false at once when there is
// no lifeline.
func HostSpoke(d time.Duration) bool {
	fd := lifelinePoll.Load()
	if fd < 0 {
		return false
	}
	fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
	deadline := time.Now().Add(d)
	for {
		n, err := unix.Poll(fds, int(max(0, time.Until(deadline).Milliseconds())))
		if err != unix.EINTR {
			return err == nil && n > 0 && fds[0].Revents != 0
		}
	}
}

// ClosingInOrder tells the worker, through the lifeline, that this host is
// closing it and removes its socket itself; closing the lifeline then is
// the quickest way to have a worker go (it needs no teardown of its
// connection first).
func (p *Process) ClosingInOrder() {
	if p.life != nil {
		p.life.Write([]byte{lifeClosing})
		p.life.Close() // Stop closes it again, to no effect
	}
}

// closeLifeline tells the worker that this host, alive, is stopping it:
// not to be taken for the host's death. The worker removes its socket
// itself, unless ClosingInOrder said otherwise before.
func (p *Process) closeLifeline() {
	if p.life != nil {
		p.life.Write([]byte{lifeStopping}) // fails, to no effect, after ClosingInOrder
		p.life.Close()
	}
}

// KillOwnGroup kills this process with SIGKILL, and in the same system
// call every process in its process group when it leads one: a worker that
// Start started does, and its children, and theirs, are in its group
// unless they left it (a detached child, a daemon). A process that leads
// no group (one started by another means) kills only itself: its group is
// someone else's. It does not return.
func KillOwnGroup() {
	pid := os.Getpid()
	if syscall.Getpgrp() == pid {
		syscall.Kill(-pid, syscall.SIGKILL)
	}
	syscall.Kill(pid, syscall.SIGKILL) // not reached when the group was killed
	os.Exit(1)                         // not reached
}
