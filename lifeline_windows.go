package worker

import (
	"sync/atomic"

	"golang.org/x/sys/windows"

	"github.com/isolated-workers/worker/internal/wire"
)

// watchHost calls gone when the host process exits: the worker waits on a
// handle to it. (The job object also kills a non-detached worker then;
// this lets the worker notice first when it can.)
func watchHost(d wire.StartupData, gone func()) {
	if d.HostPID <= 0 {
		return
	}
	h, err := windows.OpenProcess(windows.SYNCHRONIZE, false, uint32(d.HostPID))
	if err != nil {
		return
	}
	go func() {
		defer windows.CloseHandle(h)
		windows.WaitForSingleObject(h, windows.INFINITE)
		gone()
	}()
}

// hostCleansUp is never set on Windows: there is no lifeline to tell it.
var hostCleansUp atomic.Bool

func (p *process) closingInOrder() {}
