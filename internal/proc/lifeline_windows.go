package proc

import "golang.org/x/sys/windows"

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

// HostCleansUp is always false on Windows: there is no lifeline to say so.
func HostCleansUp() bool { return false }

// ClosingInOrder has nothing to tell on Windows.
func (p *Process) ClosingInOrder() {}
