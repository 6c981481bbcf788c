package worker_test

import (
	"errors"
	"time"

	"golang.org/x/sys/windows"
)

// svDropConns is not available on Windows: the test that needs it is
// Unix-only.
func svDropConns() (int, error) {
	return 0, errors.New("svDrop: not on Windows")
}

// lcKillPid terminates process pid and reports whether it could.
func lcKillPid(pid int) bool {
	h, err := windows.OpenProcess(windows.PROCESS_TERMINATE, false, uint32(pid))
	if err != nil {
		return false
	}
	defer windows.CloseHandle(h)
	return windows.TerminateProcess(h, 9) == nil
}

// pidGoneWithin waits up to d for process pid to be gone, and reports
// whether it is: a pid that no process has any more counts as gone.
func pidGoneWithin(pid int, d time.Duration) bool {
	h, err := windows.OpenProcess(windows.SYNCHRONIZE, false, uint32(pid))
	if err != nil {
		return true
	}
	defer windows.CloseHandle(h)
	ev, err := windows.WaitForSingleObject(h, uint32(d/time.Millisecond))
	return err == nil && ev == windows.WAIT_OBJECT_0
}

// underWine reports whether the tests run under Wine rather than Windows.
func underWine() bool { return lwIsWine() }
