package proc

import (
	"os"
	"time"

	"golang.org/x/sys/windows"
)

// WatchHost calls gone when the host process (hostPID) exits: the worker
// waits on a handle to it. (The job object also kills a non-detached worker
// then; this lets the worker notice first when it can.) There is no
// lifeline pipe on Windows: lifeFD is ignored.
func WatchHost(lifeFD, hostPID int, gone func()) {
	if hostPID <= 0 {
		return
	}
	h, err := windows.OpenProcess(windows.SYNCHRONIZE, false, uint32(hostPID))
	if err != nil {
		return
	}
	go func() {
		defer windows.CloseHandle(h)
		windows.WaitForSingleObject(h, windows.INFINITE)
		gone()
	}()
}

// HostStops is always false on Windows: there is no lifeline to say so.
// The watch on the host's process fires only when the host has exited.
func HostStops() bool { return false }

// HostCleansUp is always false on Windows: there is no lifeline to say so.
func HostCleansUp() bool { return false }

// HostSpoke reports false at once: there is no lifeline on Windows.
func HostSpoke(time.Duration) bool { return false }

// ClosingInOrder has nothing to tell on Windows.
func (p *Process) ClosingInOrder() {}

// closeLifeline has no lifeline to close on Windows.
func (p *Process) closeLifeline() {}

// KillOwnGroup ends this process at once, with exit code 1 (what a job's
// kill leaves). The processes it started are not its to kill on Windows: a
// worker that Start started is in a kill-on-close job, which ends them
// with it when the host dies. It does not return.
func KillOwnGroup() {
	windows.TerminateProcess(windows.CurrentProcess(), 1)
	os.Exit(1) // not reached
}

// DisarmParentDeath has nothing to turn off: there is no parent-death
// signal on Windows.
func DisarmParentDeath() {}
